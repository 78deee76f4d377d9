//! Opt-out and opt-in: recording a subject's consent for a purpose where the
//! policy says consent lives (a consents row or a boolean column).

use tokio_postgres::Client;

use crate::policy::{Policy, BUILTIN_PURPOSES};

use super::private::{self, ident, transaction};
use super::schema::Subjects;
use super::{Action, ActionRecord, SubjectError};

/// Withdraws `customer_id`'s consent for `purpose` (records a refusal), so
/// the purpose's opt-out view sets no longer show the subject.
pub async fn opt_out(
    client: &Client,
    policy: &Policy,
    customer_id: &str,
    purpose: &str,
    actor: &str,
) -> Result<ActionRecord, SubjectError> {
    set(client, policy, customer_id, purpose, false, actor).await
}

/// Records `customer_id`'s consent for `purpose` (a grant).
pub async fn opt_in(
    client: &Client,
    policy: &Policy,
    customer_id: &str,
    purpose: &str,
    actor: &str,
) -> Result<ActionRecord, SubjectError> {
    set(client, policy, customer_id, purpose, true, actor).await
}

async fn set(
    client: &Client,
    policy: &Policy,
    customer_id: &str,
    purpose: &str,
    granted: bool,
    actor: &str,
) -> Result<ActionRecord, SubjectError> {
    let def = policy
        .purpose(purpose)
        .ok_or_else(|| unknown_purpose(policy, purpose))?;
    private::ensure(client, policy).await?;
    let subjects = Subjects::load(client, policy).await?;
    let (customer_id, outcome) = transaction(client, async {
        let id = subjects.require(client, customer_id, true).await?;
        let outcome = match &def.column {
            Some(column) => set_column(client, &subjects, column, &id, granted).await?,
            None => set_row(client, policy, &subjects, &id, purpose, granted).await?,
        };
        Ok((id, outcome))
    })
    .await?;
    Ok(ActionRecord {
        action: if granted {
            Action::OptIn
        } else {
            Action::OptOut
        },
        customer_ref: Some(private::customer_ref(client, policy, &customer_id).await?),
        purpose: Some(purpose.to_string()),
        columns: Vec::new(),
        actor: actor.to_string(),
        outcome,
    })
}

fn unknown_purpose(policy: &Policy, purpose: &str) -> SubjectError {
    let mut known: Vec<String> = BUILTIN_PURPOSES
        .iter()
        .map(|(n, _)| n.to_string())
        .chain(policy.purpose_names())
        .collect();
    known.sort();
    known.dedup();
    SubjectError::UnknownPurpose {
        purpose: purpose.to_string(),
        known: known.join(", "),
    }
}

/// Consent as a boolean column `table.column` of a table holding the subject key.
async fn set_column(
    client: &Client,
    subjects: &Subjects,
    column: &str,
    customer_id: &str,
    granted: bool,
) -> Result<String, SubjectError> {
    let (table, col) = column.split_once('.').ok_or_else(|| {
        SubjectError::Rule(format!("purpose column {column} is not table.column"))
    })?;
    let t = subjects
        .table(table)
        .filter(|t| t.link.is_some())
        .ok_or_else(|| {
            SubjectError::Rule(format!(
                "purpose column {column}: {table} holds no subject key"
            ))
        })?;
    let sql = format!(
        "UPDATE {} SET {} = $2 WHERE {}",
        subjects.qualified(t),
        ident(col),
        subjects.link_condition(t, 1)?
    );
    let n = client.execute(&sql, &[&customer_id, &granted]).await?;
    if n == 0 {
        return Err(SubjectError::Rule(format!(
            "purpose column {column}: no row of {table} for this subject"
        )));
    }
    Ok(format!("{column} set to {granted}"))
}

/// Consent as a row of the `[consent]` table: updated, or inserted if missing.
async fn set_row(
    client: &Client,
    policy: &Policy,
    subjects: &Subjects,
    customer_id: &str,
    purpose: &str,
    granted: bool,
) -> Result<String, SubjectError> {
    let consent = policy.consent().ok_or_else(|| {
        SubjectError::Rule(format!(
            "purpose {purpose} has no consent source: add a [consent] table or a purpose column"
        ))
    })?;
    let t = subjects
        .table(&consent.table)
        .ok_or_else(|| SubjectError::Rule(format!("no table {}", consent.table)))?;
    let subject_col = t.column(&consent.subject_column).ok_or_else(|| {
        SubjectError::Rule(format!(
            "no column {}.{}",
            consent.table, consent.subject_column
        ))
    })?;
    let (table, subj, purp, gr) = (
        subjects.qualified(t),
        ident(&consent.subject_column),
        ident(&consent.purpose_column),
        ident(&consent.granted_column),
    );
    let key = subject_col.param(1);
    let update = format!("UPDATE {table} SET {gr} = $3 WHERE {subj} = {key} AND {purp} = $2");
    if client
        .execute(&update, &[&customer_id, &purpose, &granted])
        .await?
        > 0
    {
        return Ok(format!("{} row updated", consent.table));
    }
    let insert = format!("INSERT INTO {table} ({subj}, {purp}, {gr}) VALUES ({key}, $2, $3)");
    client
        .execute(&insert, &[&customer_id, &purpose, &granted])
        .await?;
    Ok(format!("{} row inserted", consent.table))
}
