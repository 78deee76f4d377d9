//! Erasure: a subject's rows are deleted or irreversibly anonymized by the
//! tables' `erase` rules in one transaction, and a destruction record that
//! names the subject only by its keyed reference is written to the private
//! `destruction_log`.
//!
//! Anonymizing keeps a row for statistics: identity, personal, sensitive and
//! unclassified columns are overwritten (NULL, or a constant where NULL is
//! not allowed) and the subject key is replaced everywhere by a fresh random
//! key (negative for integer keys, so it never meets a sequence), so the
//! anonymized rows of one subject stay together but no longer lead to them.

use serde::Serialize;
use tokio_postgres::Client;

use crate::policy::{EraseRule, Policy};
use crate::views::{fingerprint, TypeCategory};

use super::private::{self, ident, transaction};
use super::schema::{Column, Subjects, Table};
use super::{Action, ActionRecord, Outcome, SubjectError};

/// What erasure did to one table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableErasure {
    /// The table (`<private schema>.corrections` for correction requests).
    pub table: String,
    /// Deleted or anonymized.
    pub action: EraseRule,
    /// Rows affected.
    pub rows: u64,
}

/// The result of erasing one subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErasureReport {
    /// The subject's keyed reference (also in the destruction record).
    pub customer_ref: String,
    /// What was done per table.
    pub tables: Vec<TableErasure>,
    /// The id of the destruction record.
    pub log_id: i64,
}

/// Why an erasure happens, for the destruction record.
pub(super) struct Reason<'a> {
    /// `request` or `retention`.
    pub trigger: &'a str,
    /// The rule that caused it, in words.
    pub rule: String,
    /// Who ran it.
    pub actor: &'a str,
}

/// Erases subject `customer_id` by the policy's `erase` rules, in one
/// transaction, and writes the destruction record.
pub async fn erase(
    client: &Client,
    policy: &Policy,
    customer_id: &str,
    requested_by: &str,
) -> Result<Outcome<ErasureReport>, SubjectError> {
    private::ensure(client, policy).await?;
    let subjects = Subjects::load(client, policy).await?;
    let rules = rules(&subjects)?;
    let reason = Reason {
        trigger: "request",
        rule: format!("erasure on request; {}", describe(&rules)),
        actor: requested_by,
    };
    let report = transaction(
        client,
        erase_one(client, policy, &subjects, customer_id, &reason),
    )
    .await?;
    let record = ActionRecord {
        action: Action::Erase,
        customer_ref: Some(report.customer_ref.clone()),
        purpose: None,
        columns: report.tables.iter().map(|t| t.table.clone()).collect(),
        actor: requested_by.to_string(),
        outcome: format!("erased; destruction record {}", report.log_id),
    };
    Ok(Outcome {
        value: report,
        record,
    })
}

/// Every table holding subject data with its erase rule, subject table
/// first; fails if a table has no rule or the rules contradict each other.
pub(super) fn rules(subjects: &Subjects) -> Result<Vec<(&Table, EraseRule)>, SubjectError> {
    let linked = subjects.linked();
    let missing: Vec<&str> = linked
        .iter()
        .filter(|t| t.erase.is_none())
        .map(|t| t.name.as_str())
        .collect();
    if !missing.is_empty() {
        return Err(SubjectError::Rule(format!(
            "tables holding subject data have no erase rule: {}; add erase = \"delete\" or \"anonymize\" under [tables.<name>]",
            missing.join(", ")
        )));
    }
    let rules: Vec<(&Table, EraseRule)> = linked
        .into_iter()
        .filter_map(|t| t.erase.map(|r| (t, r)))
        .collect();
    let subject_deleted = rules
        .first()
        .is_some_and(|(t, r)| t.name == subjects.table && *r == EraseRule::Delete);
    if subject_deleted {
        if let Some((t, _)) = rules.iter().find(|(_, r)| *r == EraseRule::Anonymize) {
            return Err(SubjectError::Rule(format!(
                "table {} is anonymized but the subject table {} is deleted; anonymized rows would point to a deleted subject: set erase = \"delete\" for {} or \"anonymize\" for {}",
                t.name, subjects.table, t.name, subjects.table
            )));
        }
    }
    Ok(rules)
}

/// The rules in words: `customers=anonymize, orders=anonymize, ...`.
pub(super) fn describe(rules: &[(&Table, EraseRule)]) -> String {
    rules
        .iter()
        .map(|(t, r)| format!("{}={}", t.name, r.name()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Erases one subject inside the caller's transaction.
pub(super) async fn erase_one(
    client: &Client,
    policy: &Policy,
    subjects: &Subjects,
    customer_id: &str,
    reason: &Reason<'_>,
) -> Result<ErasureReport, SubjectError> {
    let rules = rules(subjects)?;
    let p = private::schema(policy);
    let customer_id = &subjects.require(client, customer_id, true).await?;
    let already = format!("SELECT 1 FROM {p}.anonymized_subjects WHERE key = $1");
    if client.query_opt(&already, &[&customer_id]).await?.is_some() {
        return Err(SubjectError::Rule(format!(
            "subject {customer_id} is an anonymized row of an earlier erasure"
        )));
    }
    let mut tables = match rules.first() {
        Some((subject, EraseRule::Anonymize)) => {
            anonymize(client, subjects, subject, &rules, customer_id, &p).await?
        }
        _ => delete(client, subjects, &rules, customer_id).await?,
    };
    let corrections = format!("DELETE FROM {p}.corrections WHERE customer = $1");
    tables.push(TableErasure {
        table: format!("{}.corrections", policy.settings().private_schema),
        action: EraseRule::Delete,
        rows: client.execute(&corrections, &[&customer_id]).await?,
    });
    let customer_ref = private::customer_ref(client, policy, customer_id).await?;
    let log_id = log(client, policy, Some(&customer_ref), &tables, reason).await?;
    Ok(ErasureReport {
        customer_ref,
        tables,
        log_id,
    })
}

/// Writes a destruction record; returns its id.
pub(super) async fn log(
    client: &Client,
    policy: &Policy,
    customer_ref: Option<&str>,
    tables: &[TableErasure],
    reason: &Reason<'_>,
) -> Result<i64, SubjectError> {
    let sql = format!(
        "INSERT INTO {}.destruction_log (actor, trigger, customer_ref, rule, policy_fingerprint, tables) \
         VALUES ($1, $2, $3, $4, $5, $6::text::jsonb) RETURNING id",
        private::schema(policy)
    );
    let json = serde_json::to_string(tables)
        .map_err(|e| SubjectError::Rule(format!("cannot encode the destruction record: {e}")))?;
    let row = client
        .query_one(
            &sql,
            &[
                &reason.actor,
                &reason.trigger,
                &customer_ref,
                &reason.rule,
                &fingerprint(policy),
                &json,
            ],
        )
        .await?;
    Ok(row.get(0))
}

async fn delete(
    client: &Client,
    subjects: &Subjects,
    rules: &[(&Table, EraseRule)],
    customer_id: &str,
) -> Result<Vec<TableErasure>, SubjectError> {
    let mut out = Vec::new();
    // Referencing tables first, the subject table (first in `rules`) last.
    for (table, _) in rules.iter().rev() {
        let sql = format!(
            "DELETE FROM {} WHERE {}",
            subjects.qualified(table),
            subjects.link_condition(table, 1)?
        );
        out.push(TableErasure {
            table: table.name.clone(),
            action: EraseRule::Delete,
            rows: client.execute(&sql, &[&customer_id]).await?,
        });
    }
    out.reverse();
    Ok(out)
}

/// Copies the subject row under a fresh key with its personal columns
/// overwritten, moves or deletes the referencing rows, deletes the original.
async fn anonymize(
    client: &Client,
    subjects: &Subjects,
    subject: &Table,
    rules: &[(&Table, EraseRule)],
    customer_id: &str,
    private_schema: &str,
) -> Result<Vec<TableErasure>, SubjectError> {
    let new_key = fresh_key(client, subjects, subject).await?;
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&customer_id, &new_key];
    let mut names = Vec::new();
    let mut values = Vec::new();
    for column in &subject.columns {
        names.push(ident(&column.name));
        values.push(if subject.link.as_deref() == Some(column.name.as_str()) {
            column.param(2)
        } else if column.is_personal() {
            replacement(subject, column)?
        } else {
            ident(&column.name)
        });
    }
    let table = subjects.qualified(subject);
    let condition = subjects.link_condition(subject, 1)?;
    let copy = format!(
        "INSERT INTO {table} ({}) OVERRIDING SYSTEM VALUE SELECT {} FROM {table} WHERE {condition}",
        names.join(", "),
        values.join(", ")
    );
    let rows = client.execute(&copy, &params).await?;
    let mut out = vec![TableErasure {
        table: subject.name.clone(),
        action: EraseRule::Anonymize,
        rows,
    }];
    for (table, rule) in &rules[1..] {
        out.push(TableErasure {
            table: table.name.clone(),
            action: *rule,
            rows: referencing(client, subjects, table, *rule, &params).await?,
        });
    }
    let delete = format!("DELETE FROM {table} WHERE {condition}");
    client.execute(&delete, &[&customer_id]).await?;
    let mark = format!("INSERT INTO {private_schema}.anonymized_subjects (key) VALUES ($1)");
    client.execute(&mark, &[&new_key]).await?;
    Ok(out)
}

/// Deletes, or anonymizes and re-keys, the rows of a referencing table.
async fn referencing(
    client: &Client,
    subjects: &Subjects,
    table: &Table,
    rule: EraseRule,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync); 2],
) -> Result<u64, SubjectError> {
    let condition = subjects.link_condition(table, 1)?;
    let qualified = subjects.qualified(table);
    let sql = match rule {
        EraseRule::Delete => {
            let sql = format!("DELETE FROM {qualified} WHERE {condition}");
            return Ok(client.execute(&sql, &params[..1]).await?);
        }
        EraseRule::Anonymize => {
            let mut sets = Vec::new();
            for column in &table.columns {
                if table.link.as_deref() == Some(column.name.as_str()) {
                    sets.push(format!("{} = {}", ident(&column.name), column.param(2)));
                } else if column.is_personal() {
                    sets.push(format!(
                        "{} = {}",
                        ident(&column.name),
                        replacement(table, column)?
                    ));
                }
            }
            format!(
                "UPDATE {qualified} SET {} WHERE {condition}",
                sets.join(", ")
            )
        }
    };
    Ok(client.execute(&sql, params).await?)
}

/// The value an anonymized column gets: NULL where allowed, else a constant
/// of its type (a random token for unique text columns).
fn replacement(table: &Table, column: &Column) -> Result<String, SubjectError> {
    if !column.not_null {
        return Ok("NULL".into());
    }
    let ty = &column.type_name;
    let value = match (column.category, column.unique) {
        (TypeCategory::Text, true) => {
            format!("CAST('erased-' || md5(gen_random_uuid()::text) AS {ty})")
        }
        (TypeCategory::Text, false) => format!("CAST('erased' AS {ty})"),
        (TypeCategory::Integer | TypeCategory::Numeric, false) => format!("CAST(0 AS {ty})"),
        (TypeCategory::Date | TypeCategory::Timestamp, false) => format!("CAST('epoch' AS {ty})"),
        (TypeCategory::Boolean, false) => "false".into(),
        _ => {
            return Err(SubjectError::Rule(format!(
                "cannot anonymize {}.{} ({ty}, NOT NULL{}): no constant fits; make it nullable or set erase = \"delete\" for {}",
                table.name,
                column.name,
                if column.unique { ", unique" } else { "" },
                table.name
            )))
        }
    };
    Ok(value)
}

/// A random key of the subject key's type that no subject has.
async fn fresh_key(
    client: &Client,
    subjects: &Subjects,
    subject: &Table,
) -> Result<String, SubjectError> {
    let column = subject
        .link_column()
        .ok_or_else(|| SubjectError::Rule(format!("table {} has no key", subject.name)))?;
    let sql = format!(
        "SELECT 1 FROM {} WHERE {}",
        subjects.qualified(subject),
        subjects.link_condition(subject, 1)?
    );
    for _ in 0..16 {
        let candidate = random_key(column)?;
        if client.query_opt(&sql, &[&candidate]).await?.is_none() {
            return Ok(candidate);
        }
    }
    Err(SubjectError::Rule(format!(
        "no free key for an anonymized row of {}",
        subject.name
    )))
}

fn random_key(column: &Column) -> Result<String, SubjectError> {
    let bits: u128 = rand::random();
    match (column.category, column.type_name.as_str()) {
        (TypeCategory::Integer, ty) => {
            let max = match ty {
                "smallint" => i16::MAX as u128,
                "integer" => i32::MAX as u128,
                _ => i64::MAX as u128,
            };
            Ok(format!("-{}", 1 + bits % max))
        }
        (TypeCategory::Text, _) => Ok(format!("erased-{bits:032x}")),
        (_, "uuid") => {
            let hex = format!("{:032x}", (bits & !(0xf << 76) & !(0x3 << 62)) | (0x4 << 76) | (0x2 << 62));
            Ok(format!(
                "{}-{}-{}-{}-{}",
                &hex[..8],
                &hex[8..12],
                &hex[12..16],
                &hex[16..20],
                &hex[20..]
            ))
        }
        (_, ty) => Err(SubjectError::Rule(format!(
            "cannot give an anonymized subject a new key of type {ty}: set erase = \"delete\" for the subject table"
        ))),
    }
}
