//! Indexes over masked columns. A view that masks an indexed column hides
//! the index from the queries that filter on that column: the filter sees
//! the mask expression, not the column. For every plain index on a masked
//! column, pgveil builds the same index over the mask expression, so that a
//! search through the view is an index scan as it is on the base table. The
//! index holds masked values only. Masks that read other tables (keyed
//! pseudonyms, noise) or are not immutable get no index.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use super::catalog::{Catalog, ColumnIndex};
use super::mask_sql::{ident, literal, BASE_ALIAS};

/// Name prefix of the indexes pgveil owns in the base schema.
pub const NAME_PREFIX: &str = "pgveil_mask_";

/// PostgreSQL's longest identifier, in bytes.
const MAX_NAME: usize = 63;

/// One column a view shows through a mask, with the view's SQL for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskedColumn {
    /// The base table.
    pub table: String,
    /// The base column.
    pub column: String,
    /// The select-list expression, over the base alias.
    pub expression: String,
}

/// The statements that drop pgveil's indexes the policy no longer needs
/// and create the ones it does.
pub fn statements(base_schema: &str, catalog: &Catalog, masked: &[MaskedColumn]) -> Vec<String> {
    let wanted = wanted_indexes(catalog, masked);
    let mut out = vec![drop_others(base_schema, wanted.keys())];
    out.extend(
        wanted
            .iter()
            .map(|(name, index)| create(base_schema, name, index)),
    );
    out
}

struct Planned<'a> {
    table: &'a str,
    column: &'a str,
    expression: String,
    index: &'a ColumnIndex,
}

fn wanted_indexes<'a>(
    catalog: &'a Catalog,
    masked: &'a [MaskedColumn],
) -> BTreeMap<String, Planned<'a>> {
    let mut wanted = BTreeMap::new();
    for m in masked {
        let Some(expression) = indexable_expression(m) else {
            continue;
        };
        let Some(table) = catalog.tables.get(&m.table) else {
            continue;
        };
        for index in table.indexes.iter().filter(|i| i.column == m.column) {
            let planned = Planned {
                table: &m.table,
                column: &m.column,
                expression: expression.clone(),
                index,
            };
            wanted.insert(index_name(&planned), planned);
        }
    }
    wanted
}

/// The mask expression over the bare column, when an index can hold it:
/// it reads the column, no other column and no other table.
fn indexable_expression(m: &MaskedColumn) -> Option<String> {
    let aliased = format!("{BASE_ALIAS}.{}", ident(&m.column));
    if m.expression == aliased || !m.expression.contains(&aliased) {
        return None;
    }
    let bare = m.expression.replace(&aliased, &ident(&m.column));
    let other_column = format!("{BASE_ALIAS}.\"");
    if bare.contains(&other_column) || bare.to_ascii_uppercase().contains("SELECT") {
        return None;
    }
    Some(bare)
}

fn index_name(p: &Planned) -> String {
    let digest = Sha256::digest(
        format!(
            "{}\n{}\n{}\n{}\n{}",
            p.table,
            p.column,
            p.index.method,
            p.index.opclass.as_deref().unwrap_or(""),
            p.expression
        )
        .as_bytes(),
    );
    let hash: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    let room = MAX_NAME - NAME_PREFIX.len() - hash.len() - 1;
    let mut stem = format!("{}_{}", p.table, p.column);
    while stem.len() > room {
        stem.pop();
    }
    format!("{NAME_PREFIX}{stem}_{hash}")
}

fn drop_others<'a>(base_schema: &str, keep: impl Iterator<Item = &'a String>) -> String {
    let keep: Vec<String> = keep.map(|n| literal(n)).collect();
    format!(
        "DO $pgveil$ DECLARE r record; BEGIN \
         FOR r IN SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = {} AND c.relkind = 'i' AND c.relname::text LIKE {} \
         AND c.relname <> ALL (ARRAY[{}]::name[]) \
         LOOP EXECUTE format('DROP INDEX %I.%I', {}, r.relname); END LOOP; END $pgveil$",
        literal(base_schema),
        literal(&format!("{}%", NAME_PREFIX.replace('_', "\\_"))),
        keep.join(", "),
        literal(base_schema),
    )
}

/// `CREATE INDEX`, skipped with a notice when PostgreSQL refuses the
/// expression (a mask that is not immutable, an operator class that does
/// not fit the masked type).
fn create(base_schema: &str, name: &str, p: &Planned) -> String {
    let opclass = p
        .index
        .opclass
        .as_deref()
        .map(|o| format!(" {}", ident(o)))
        .unwrap_or_default();
    format!(
        "DO $pgveil$ BEGIN \
         CREATE INDEX IF NOT EXISTS {} ON {}.{} USING {} (({}){opclass}); \
         EXCEPTION WHEN invalid_object_definition OR datatype_mismatch OR undefined_object THEN \
         RAISE NOTICE 'pgveil: no index over the mask of %.%: %', {}, {}, SQLERRM; END $pgveil$",
        ident(name),
        ident(base_schema),
        ident(p.table),
        ident(&p.index.method),
        p.expression,
        literal(p.table),
        literal(p.column),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::views::catalog::CatalogTable;

    fn catalog() -> Catalog {
        let mut catalog = Catalog::default();
        catalog.tables.insert(
            "customers".into(),
            CatalogTable {
                indexes: vec![ColumnIndex {
                    column: "email".into(),
                    method: "btree".into(),
                    opclass: Some("text_pattern_ops".into()),
                }],
                ..CatalogTable::default()
            },
        );
        catalog
    }

    fn masked(column: &str, expression: &str) -> MaskedColumn {
        MaskedColumn {
            table: "customers".into(),
            column: column.into(),
            expression: expression.into(),
        }
    }

    const EMAIL_MASK: &str = "(CASE WHEN strpos(t.\"email\", '@') > 0 THEN '***@' || substring(t.\"email\" from '@([^@]*)$') ELSE '***' END)::text";

    #[test]
    fn an_indexed_masked_column_gets_the_same_index_over_its_mask() {
        let sql = statements("public", &catalog(), &[masked("email", EMAIL_MASK)]);
        assert_eq!(sql.len(), 2, "{sql:?}");
        let create = &sql[1];
        assert!(
            create.contains(
                "ON \"public\".\"customers\" USING \"btree\" (((CASE WHEN strpos(\"email\", '@')"
            ),
            "{create}"
        );
        assert!(create.contains("\"text_pattern_ops\""), "{create}");
        assert!(!create.contains("t.\""), "{create}");
        let name = create
            .split("IF NOT EXISTS \"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap_or_default();
        assert!(name.starts_with("pgveil_mask_customers_email_"), "{name}");
        assert!(sql[0].contains(&format!("'{name}'")), "{}", sql[0]);
    }

    #[test]
    fn the_same_mask_in_two_view_sets_is_indexed_once() {
        let m = masked("email", EMAIL_MASK);
        let sql = statements("public", &catalog(), &[m.clone(), m]);
        assert_eq!(sql.len(), 2, "{sql:?}");
    }

    #[test]
    fn kept_unindexed_and_keyed_columns_get_no_index() {
        let keyed = "sha256((SELECT k.opad FROM keys k) || convert_to(t.\"email\", 'UTF8'))";
        for m in [
            masked("email", "t.\"email\""),
            masked("email", keyed),
            masked("email", "NULL::text"),
            masked("phone", "left(t.\"phone\", 2)"),
            masked("email", "t.\"email\" || t.\"phone\""),
        ] {
            let sql = statements("public", &catalog(), &[m]);
            assert_eq!(sql.len(), 1, "{sql:?}");
            assert!(
                sql[0].starts_with("DO $pgveil$ DECLARE r record"),
                "{sql:?}"
            );
        }
    }

    #[test]
    fn long_names_fit_postgresql_identifiers() {
        let long = "c".repeat(80);
        let mut catalog = catalog();
        if let Some(t) = catalog.tables.get_mut("customers") {
            t.indexes[0].column = long.clone();
        }
        let m = masked(&long, &format!("lower(t.\"{long}\")"));
        let sql = statements("public", &catalog, &[m]);
        let name = sql[1]
            .split("IF NOT EXISTS \"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap_or_default();
        assert_eq!(name.len(), MAX_NAME, "{name}");
    }
}
