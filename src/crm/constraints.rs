//! Dropping the indexes and constraints of freshly created tables before a
//! bulk load and re-creating them afterwards (as pg_restore does): building
//! an index once and validating a foreign key with one join is far faster
//! than maintaining them row by row.

use tokio_postgres::Client;

/// The dropped definitions of some tables, to be re-created after loading.
#[derive(Debug)]
pub(crate) struct Deferred {
    /// `CREATE INDEX` statements of indexes that back no constraint.
    indexes: Vec<String>,
    /// (table, name, definition) of primary-key and unique constraints.
    keys: Vec<(String, String, String)>,
    /// (table, name, definition) of foreign keys.
    foreign_keys: Vec<(String, String, String)>,
}

/// Constraints of kinds `$1` on the tables named `$2` in schema `public`.
const CONSTRAINTS: &str = "SELECT format('%I.%I', n.nspname, t.relname), quote_ident(c.conname), \
    pg_get_constraintdef(c.oid) FROM pg_constraint c \
    JOIN pg_class t ON t.oid = c.conrelid JOIN pg_namespace n ON n.oid = t.relnamespace \
    WHERE n.nspname = 'public' AND t.relname = ANY($2) AND c.contype = ANY($1::\"char\"[]) \
    ORDER BY 1, 2";

/// Indexes on the tables named `$1` in schema `public` that back no constraint.
const INDEXES: &str = "SELECT format('%I.%I', n.nspname, ic.relname), \
    pg_get_indexdef(i.indexrelid) FROM pg_index i \
    JOIN pg_class t ON t.oid = i.indrelid JOIN pg_class ic ON ic.oid = i.indexrelid \
    JOIN pg_namespace n ON n.oid = t.relnamespace \
    WHERE n.nspname = 'public' AND t.relname = ANY($1) \
    AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid) \
    ORDER BY 1";

impl Deferred {
    /// Drops every index, key and foreign key of `tables`, remembering them.
    pub(crate) async fn drop_all(
        client: &Client,
        tables: &[&str],
    ) -> Result<Deferred, tokio_postgres::Error> {
        let tables: Vec<String> = tables.iter().map(|t| t.to_string()).collect();
        let constraints = |kinds: &'static [i8]| {
            let tables = &tables;
            async move {
                let rows = client.query(CONSTRAINTS, &[&kinds, tables]).await?;
                Ok::<_, tokio_postgres::Error>(
                    rows.iter()
                        .map(|r| (r.get(0), r.get(1), r.get(2)))
                        .collect::<Vec<(String, String, String)>>(),
                )
            }
        };
        let foreign_keys = constraints(&[b'f' as i8]).await?;
        let keys = constraints(&[b'p' as i8, b'u' as i8]).await?;
        let index_rows = client.query(INDEXES, &[&tables]).await?;
        let mut drops = String::new();
        for (table, name, _) in foreign_keys.iter().chain(&keys) {
            drops.push_str(&format!("ALTER TABLE {table} DROP CONSTRAINT {name};\n"));
        }
        for row in &index_rows {
            drops.push_str(&format!("DROP INDEX {};\n", row.get::<_, &str>(0)));
        }
        client.batch_execute(&drops).await?;
        Ok(Deferred {
            indexes: index_rows.iter().map(|r| r.get(1)).collect(),
            keys,
            foreign_keys,
        })
    }

    /// Re-creates what [`Deferred::drop_all`] dropped: indexes and keys
    /// first, then the foreign keys that rely on them.
    pub(crate) async fn restore(self, client: &Client) -> Result<(), tokio_postgres::Error> {
        let mut sql = String::from("SET LOCAL maintenance_work_mem = '256MB';\n");
        for index in &self.indexes {
            sql.push_str(index);
            sql.push_str(";\n");
        }
        for (table, name, def) in self.keys.iter().chain(&self.foreign_keys) {
            sql.push_str(&format!(
                "ALTER TABLE {table} ADD CONSTRAINT {name} {def};\n"
            ));
        }
        client.batch_execute(&sql).await
    }
}
