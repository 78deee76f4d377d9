//! The part of the live catalog that view generation needs: the base
//! tables, their column types, primary keys, foreign keys and single-column
//! indexes.

use std::collections::BTreeMap;

use tokio_postgres::Client;

use super::ViewsError;

/// The broad family of a column type; decides which masks fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TypeCategory {
    /// text, varchar, char.
    Text,
    /// smallint, integer, bigint.
    Integer,
    /// numeric, real, double precision.
    Numeric,
    /// date.
    Date,
    /// timestamp with or without time zone.
    Timestamp,
    /// boolean.
    Boolean,
    /// Anything else.
    Other,
}

impl TypeCategory {
    /// The category of a type from `pg_type.typcategory` and `typname`.
    pub fn from_pg(category: &str, typname: &str) -> TypeCategory {
        match (category, typname) {
            ("S", _) => TypeCategory::Text,
            ("N", "int2" | "int4" | "int8") => TypeCategory::Integer,
            ("N", "numeric" | "float4" | "float8") => TypeCategory::Numeric,
            ("D", "date") => TypeCategory::Date,
            ("D", "timestamp" | "timestamptz") => TypeCategory::Timestamp,
            ("B", _) => TypeCategory::Boolean,
            _ => TypeCategory::Other,
        }
    }
}

/// One column of a base table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogColumn {
    /// Column name.
    pub name: String,
    /// SQL type as `format_type` prints it, e.g. `numeric(12,2)`.
    pub type_name: String,
    /// Its broad family.
    pub category: TypeCategory,
}

/// A single-column foreign key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignKey {
    /// The referencing column.
    pub column: String,
    /// The referenced table (same schema).
    pub ref_table: String,
    /// The referenced column.
    pub ref_column: String,
}

/// A plain index on one column of a base table (no expression, no predicate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnIndex {
    /// The indexed column.
    pub column: String,
    /// The access method, e.g. `btree`.
    pub method: String,
    /// The operator class when it is not the type's default, e.g. `text_pattern_ops`.
    pub opclass: Option<String>,
}

/// One base table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CatalogTable {
    /// Columns in their table order.
    pub columns: Vec<CatalogColumn>,
    /// Primary key columns in key order.
    pub primary_key: Vec<String>,
    /// Single-column foreign keys.
    pub foreign_keys: Vec<ForeignKey>,
    /// Whether PUBLIC holds any privilege on the table.
    pub public_grants: bool,
    /// Plain single-column indexes, pgveil's own excepted.
    pub indexes: Vec<ColumnIndex>,
}

impl CatalogTable {
    /// A column by name.
    pub fn column(&self, name: &str) -> Option<&CatalogColumn> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// The base tables of one schema.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog {
    /// Tables by name.
    pub tables: BTreeMap<String, CatalogTable>,
}

const COLUMNS: &str = "
SELECT c.relname::text, a.attname::text, format_type(a.atttypid, a.atttypmod),
       t.typcategory::text, t.typname::text,
       coalesce(c.relacl::text, '') ~ '(^|[{,])=' AS public_grants
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
JOIN pg_type t ON t.oid = a.atttypid
WHERE n.nspname = $1 AND c.relkind IN ('r', 'p')
ORDER BY c.relname, a.attnum";

const PRIMARY_KEYS: &str = "
SELECT c.relname::text, a.attname::text
FROM pg_index i
JOIN pg_class c ON c.oid = i.indrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY (i.indkey::int2[])
WHERE n.nspname = $1 AND i.indisprimary
ORDER BY c.relname, array_position(i.indkey::int2[], a.attnum)";

const FOREIGN_KEYS: &str = "
SELECT c.relname::text, a.attname::text, rc.relname::text, ra.attname::text
FROM pg_constraint k
JOIN pg_class c ON c.oid = k.conrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_class rc ON rc.oid = k.confrelid AND rc.relnamespace = n.oid
JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = k.conkey[1]
JOIN pg_attribute ra ON ra.attrelid = k.confrelid AND ra.attnum = k.confkey[1]
WHERE n.nspname = $1 AND k.contype = 'f' AND cardinality(k.conkey) = 1
ORDER BY 1, 2";

const COLUMN_INDEXES: &str = "
SELECT c.relname::text, a.attname::text, am.amname::text,
       CASE WHEN opc.opcdefault THEN NULL ELSE opc.opcname::text END
FROM pg_index i
JOIN pg_class ic ON ic.oid = i.indexrelid
JOIN pg_class c ON c.oid = i.indrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_am am ON am.oid = ic.relam
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = i.indkey[0]
JOIN pg_opclass opc ON opc.oid = i.indclass[0]
WHERE n.nspname = $1 AND i.indnatts = 1 AND i.indkey[0] <> 0 AND i.indpred IS NULL
  AND ic.relname::text NOT LIKE $2
ORDER BY 1, 2, 3, 4";

/// Reads the base tables of `schema`.
pub async fn read_catalog(client: &Client, schema: &str) -> Result<Catalog, ViewsError> {
    let mut catalog = Catalog::default();
    for row in client.query(COLUMNS, &[&schema]).await? {
        let table = catalog.tables.entry(row.get(0)).or_default();
        table.public_grants = row.get(5);
        table.columns.push(CatalogColumn {
            name: row.get(1),
            type_name: row.get(2),
            category: TypeCategory::from_pg(row.get(3), row.get(4)),
        });
    }
    for row in client.query(PRIMARY_KEYS, &[&schema]).await? {
        if let Some(table) = catalog.tables.get_mut(row.get::<_, &str>(0)) {
            table.primary_key.push(row.get(1));
        }
    }
    for row in client.query(FOREIGN_KEYS, &[&schema]).await? {
        if let Some(table) = catalog.tables.get_mut(row.get::<_, &str>(0)) {
            table.foreign_keys.push(ForeignKey {
                column: row.get(1),
                ref_table: row.get(2),
                ref_column: row.get(3),
            });
        }
    }
    let own = format!("{}%", super::masked_index::NAME_PREFIX.replace('_', "\\_"));
    for row in client.query(COLUMN_INDEXES, &[&schema, &own]).await? {
        if let Some(table) = catalog.tables.get_mut(row.get::<_, &str>(0)) {
            let index = ColumnIndex {
                column: row.get(1),
                method: row.get(2),
                opclass: row.get(3),
            };
            if !table.indexes.contains(&index) {
                table.indexes.push(index);
            }
        }
    }
    Ok(catalog)
}
