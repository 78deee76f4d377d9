//! Consent per purpose from the data: how many subjects refused, granted
//! or never chose, and how many each purpose's view sets leave out.

use std::collections::BTreeMap;

use tokio_postgres::Client;

use crate::policy::{Basis, Policy, BUILTIN_PURPOSES};
use crate::views::ident;

use super::facts::PurposeFacts;
use super::ReportError;

/// Refused and granted subjects of one purpose.
#[derive(Default)]
struct Choices {
    refused: u64,
    granted: u64,
}

/// One entry per purpose the policy knows, and per purpose that only
/// the consents table names; empty without a `[subject]` table.
pub async fn purposes(client: &Client, policy: &Policy) -> Result<Vec<PurposeFacts>, ReportError> {
    let Some(subject) = policy.subject() else {
        return Ok(Vec::new());
    };
    let base = ident(&policy.settings().base_schema);
    let total_sql = format!("SELECT count(*) FROM {base}.{}", ident(&subject.table));
    let subjects = count(client.query_one(&total_sql, &[]).await?.get(0));
    let mut from_table = consent_rows(client, policy, &base).await?;
    let mut names: Vec<String> = BUILTIN_PURPOSES
        .iter()
        .map(|(n, _)| n.to_string())
        .chain(policy.purpose_names())
        .chain(from_table.keys().cloned())
        .collect();
    names.sort();
    names.dedup();
    let mut out = Vec::new();
    for name in names {
        let def = policy.purpose(&name);
        let (source, choices) = match def.as_ref().and_then(|d| d.column.clone()) {
            Some(column) => {
                let choices = column_choices(client, &base, &column).await?;
                (column, choices)
            }
            None => (
                policy
                    .consent()
                    .map(|c| c.table.clone())
                    .unwrap_or_default(),
                from_table.remove(&name).unwrap_or_default(),
            ),
        };
        let no_record = subjects.saturating_sub(choices.refused + choices.granted);
        let basis = def.map(|d| d.basis);
        out.push(PurposeFacts {
            name,
            basis: match basis {
                Some(Basis::OptOut) => "opt_out",
                Some(Basis::OptIn) => "opt_in",
                None => "unknown",
            }
            .to_owned(),
            source,
            refused: choices.refused,
            granted: choices.granted,
            no_record,
            excluded: match basis {
                Some(Basis::OptIn) => choices.refused + no_record,
                _ => choices.refused,
            },
        });
    }
    Ok(out)
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// Choices per purpose recorded in the `[consent]` table.
async fn consent_rows(
    client: &Client,
    policy: &Policy,
    base: &str,
) -> Result<BTreeMap<String, Choices>, ReportError> {
    let Some(consent) = policy.consent() else {
        return Ok(BTreeMap::new());
    };
    let (subject, granted) = (
        ident(&consent.subject_column),
        ident(&consent.granted_column),
    );
    let sql = format!(
        "SELECT {purpose}::text, count(DISTINCT {subject}) FILTER (WHERE NOT {granted}), \
         count(DISTINCT {subject}) FILTER (WHERE {granted}) FROM {base}.{table} GROUP BY 1",
        purpose = ident(&consent.purpose_column),
        table = ident(&consent.table),
    );
    Ok(client
        .query(&sql, &[])
        .await?
        .iter()
        .map(|row| {
            let choices = Choices {
                refused: count(row.get(1)),
                granted: count(row.get(2)),
            };
            (row.get(0), choices)
        })
        .collect())
}

/// Choices recorded in a boolean column `table.column`.
async fn column_choices(client: &Client, base: &str, column: &str) -> Result<Choices, ReportError> {
    let Some((table, column)) = column.split_once('.') else {
        return Ok(Choices::default());
    };
    let column = ident(column);
    let sql = format!(
        "SELECT count(*) FILTER (WHERE NOT {column}), count(*) FILTER (WHERE {column}) \
         FROM {base}.{}",
        ident(table)
    );
    let row = client.query_one(&sql, &[]).await?;
    Ok(Choices {
        refused: count(row.get(0)),
        granted: count(row.get(1)),
    })
}
