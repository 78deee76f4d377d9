//! Export: every row about one subject, from every table that holds the
//! subject key, with each column's classification.

use serde_json::{json, Map, Value};
use tokio_postgres::Client;

use crate::policy::Policy;

use super::private::{self, ident};
use super::schema::{Subjects, Table};
use super::{Action, ActionRecord, Outcome, SubjectError};

/// Everything stored about subject `customer_id`, as JSON:
///
/// ```json
/// { "subject": { "table": "customers", "key": "customer_id", "value": "42" },
///   "tables": { "orders": [ { "total": { "value": "12.50", "class": "non_personal" } } ] },
///   "corrections": [ ... pending and reviewed correction requests ... ] }
/// ```
///
/// Values are PostgreSQL's text form (`null` for NULL); the class of a
/// column the policy does not classify is `"unclassified"`.
pub async fn export(
    client: &Client,
    policy: &Policy,
    customer_id: &str,
    actor: &str,
) -> Result<Outcome<Value>, SubjectError> {
    private::ensure(client, policy).await?;
    let subjects = Subjects::load(client, policy).await?;
    let customer_id = &subjects.require(client, customer_id, false).await?;
    let mut tables = Map::new();
    for table in subjects.linked() {
        let rows = table_rows(client, &subjects, table, customer_id).await?;
        tables.insert(table.name.clone(), Value::Array(rows));
    }
    let corrections = super::correct::for_customer(client, policy, customer_id).await?;
    let key = subjects
        .subject_table()
        .and_then(|t| t.link.clone())
        .unwrap_or_default();
    let value = json!({
        "subject": { "table": subjects.table, "key": key, "value": customer_id },
        "tables": tables,
        "corrections": corrections,
    });
    let record = ActionRecord {
        action: Action::Export,
        customer_ref: Some(private::customer_ref(client, policy, customer_id).await?),
        purpose: None,
        columns: subjects.linked().iter().map(|t| t.name.clone()).collect(),
        actor: actor.to_string(),
        outcome: "exported".into(),
    };
    Ok(Outcome { value, record })
}

async fn table_rows(
    client: &Client,
    subjects: &Subjects,
    table: &Table,
    customer_id: &str,
) -> Result<Vec<Value>, SubjectError> {
    let values: Vec<String> = table
        .columns
        .iter()
        .map(|c| format!("{}::text", ident(&c.name)))
        .collect();
    let sql = format!(
        "SELECT ARRAY[{}]::text[] FROM {} WHERE {} ORDER BY 1",
        values.join(", "),
        subjects.qualified(table),
        subjects.link_condition(table, 1)?
    );
    let mut rows = Vec::new();
    for row in client.query(&sql, &[&customer_id]).await? {
        let cells: Vec<Option<String>> = row.get(0);
        let mut object = Map::new();
        for (column, cell) in table.columns.iter().zip(cells) {
            let class = column.class.map_or("unclassified", |c| c.name());
            object.insert(
                column.name.clone(),
                json!({ "value": cell, "class": class }),
            );
        }
        rows.push(Value::Object(object));
    }
    Ok(rows)
}
