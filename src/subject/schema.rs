//! Where a data subject's rows are: the policy tables as they exist in the
//! database, each with the column linking it to the subject, its columns'
//! types and classifications, and its erase and retention rules.

use tokio_postgres::Client;

use crate::policy::{Class, EraseRule, Policy, RetentionDef};
use crate::views::{read_catalog, TypeCategory};

use super::private::ident;
use super::SubjectError;

/// One column of a policy table.
#[derive(Debug, Clone)]
pub struct Column {
    /// Its name.
    pub name: String,
    /// Its SQL type, usable in `CAST(... AS type)`.
    pub type_name: String,
    /// The type's family.
    pub category: TypeCategory,
    /// Whether it is `NOT NULL`.
    pub not_null: bool,
    /// Whether a single-column unique index covers it.
    pub unique: bool,
    /// The policy's classification; `None` if unclassified.
    pub class: Option<Class>,
}

impl Column {
    /// Whether the column holds (or may hold) data about a person:
    /// identity, personal, sensitive, or not classified at all.
    pub fn is_personal(&self) -> bool {
        self.class != Some(Class::NonPersonal)
    }

    /// `$n` (a text parameter) cast to this column's type.
    pub fn param(&self, n: usize) -> String {
        format!("CAST(${n}::text AS {})", self.type_name)
    }
}

/// One policy table that exists in the database.
#[derive(Debug, Clone)]
pub struct Table {
    /// Its name.
    pub name: String,
    /// The column holding the subject key, if the table is about subjects.
    pub link: Option<String>,
    /// Its columns in table order (generated columns left out).
    pub columns: Vec<Column>,
    /// What erasure does to its rows.
    pub erase: Option<EraseRule>,
    /// When its rows expire.
    pub retention: Option<RetentionDef>,
}

impl Table {
    /// A column by name.
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// The link column.
    pub fn link_column(&self) -> Option<&Column> {
        self.column(self.link.as_deref()?)
    }
}

/// The subject table, its key, and every policy table.
#[derive(Debug, Clone)]
pub struct Subjects {
    /// The base schema, quoted.
    pub base: String,
    /// The subject table's name.
    pub table: String,
    /// Every policy table present in the database.
    pub tables: Vec<Table>,
}

const COLUMNS: &str = "
SELECT c.relname::text, a.attname::text, format_type(a.atttypid, a.atttypmod),
       t.typcategory::text, t.typname::text, a.attnotnull,
       EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisunique
               AND i.indnkeyatts = 1 AND i.indkey[0] = a.attnum)
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                   AND a.attgenerated = ''
JOIN pg_type t ON t.oid = a.atttypid
WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND c.relname = ANY ($2::text[])
ORDER BY c.relname, a.attnum";

impl Subjects {
    /// Reads the policy tables from the live catalog.
    pub async fn load(client: &Client, policy: &Policy) -> Result<Subjects, SubjectError> {
        let subject = policy.subject().ok_or(SubjectError::NoSubject)?;
        let base = policy.settings().base_schema;
        let catalog = read_catalog(client, &base).await?;
        let names: Vec<String> = policy.tables().keys().cloned().collect();
        let mut tables: Vec<Table> = Vec::new();
        for row in client.query(COLUMNS, &[&base, &names]).await? {
            let table: String = row.get(0);
            if tables.last().is_none_or(|t| t.name != table) {
                let def = policy.tables().get(&table).map(|e| e.get());
                tables.push(Table {
                    name: table.clone(),
                    link: None,
                    columns: Vec::new(),
                    erase: def.and_then(|d| d.erase),
                    retention: def.and_then(|d| d.retention.clone()),
                });
            }
            let name: String = row.get(1);
            let class = policy.column_def(&table, &name).map(|(_, d, _)| d.class);
            if let Some(t) = tables.last_mut() {
                t.columns.push(Column {
                    name,
                    type_name: row.get(2),
                    category: TypeCategory::from_pg(row.get(3), row.get(4)),
                    not_null: row.get(5),
                    unique: row.get(6),
                    class,
                });
            }
        }
        for table in &mut tables {
            let fks = catalog
                .tables
                .get(&table.name)
                .map(|t| t.foreign_keys.as_slice())
                .unwrap_or_default();
            let def = policy.tables().get(&table.name).map(|e| e.get());
            table.link = if table.name == subject.table {
                Some(subject.key.clone())
            } else if let Some(col) = def.and_then(|d| d.subject.clone()) {
                Some(col)
            } else if let Some(c) = policy.consent().filter(|c| c.table == table.name) {
                Some(c.subject_column.clone())
            } else {
                fks.iter()
                    .find(|fk| fk.ref_table == subject.table && fk.ref_column == subject.key)
                    .map(|fk| fk.column.clone())
            };
            if table.link.is_some() && table.link_column().is_none() {
                return Err(SubjectError::Rule(format!(
                    "table {}: subject column {} does not exist",
                    table.name,
                    table.link.as_deref().unwrap_or_default()
                )));
            }
        }
        let s = Subjects {
            base: ident(&base),
            table: subject.table.clone(),
            tables,
        };
        if s.subject_table().and_then(Table::link_column).is_none() {
            return Err(SubjectError::Rule(format!(
                "subject table {}.{} does not exist",
                subject.table, subject.key
            )));
        }
        Ok(s)
    }

    /// The subject table.
    pub fn subject_table(&self) -> Option<&Table> {
        self.table(&self.table)
    }

    /// A policy table by name.
    pub fn table(&self, name: &str) -> Option<&Table> {
        self.tables.iter().find(|t| t.name == name)
    }

    /// The tables that hold rows about subjects, subject table first.
    pub fn linked(&self) -> Vec<&Table> {
        let mut out: Vec<&Table> = self.tables.iter().filter(|t| t.link.is_some()).collect();
        out.sort_by_key(|t| t.name != self.table);
        out
    }

    /// `schema.table`, quoted.
    pub fn qualified(&self, table: &Table) -> String {
        format!("{}.{}", self.base, ident(&table.name))
    }

    /// `WHERE` condition: `table`'s link column equals text parameter `$n`.
    pub fn link_condition(&self, table: &Table, n: usize) -> Result<String, SubjectError> {
        let col = table.link_column().ok_or_else(|| {
            SubjectError::Rule(format!("table {} holds no subject key", table.name))
        })?;
        Ok(format!("{} = {}", ident(&col.name), col.param(n)))
    }

    /// Fails unless a subject with key `customer_id` exists; locks its row
    /// when `lock` is set. Returns the key in its canonical text form
    /// (`007` becomes `7` for an integer key).
    pub async fn require(
        &self,
        client: &Client,
        customer_id: &str,
        lock: bool,
    ) -> Result<String, SubjectError> {
        let table = self
            .subject_table()
            .ok_or_else(|| SubjectError::Rule(format!("no table {}", self.table)))?;
        let key = ident(table.link.as_deref().unwrap_or_default());
        let sql = format!(
            "SELECT {key}::text FROM {} WHERE {}{}",
            self.qualified(table),
            self.link_condition(table, 1)?,
            if lock { " FOR UPDATE" } else { "" }
        );
        let row = client.query_opt(&sql, &[&customer_id]).await.map_err(|e| {
            match e.code() {
                // Not even a value of the key's type.
                Some(code) if code.code().starts_with("22") => {
                    SubjectError::UnknownSubject(customer_id.to_string())
                }
                _ => SubjectError::Db(e),
            }
        })?;
        match row {
            Some(row) => Ok(row.get(0)),
            None => Err(SubjectError::UnknownSubject(customer_id.to_string())),
        }
    }
}
