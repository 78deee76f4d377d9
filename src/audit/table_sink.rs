//! The PostgreSQL sink: the table `pgveil_audit.log`, in a schema no view
//! role is granted, filled by one batched INSERT per batch of records.

use deadpool_postgres::{GenericClient, Pool};

use super::chain::{hash_line, ChainFields, Link};
use super::AuditError;

/// Creates the schema and table if missing and keeps them closed to PUBLIC.
const CREATE: &str = "
CREATE SCHEMA IF NOT EXISTS pgveil_audit;
REVOKE ALL ON SCHEMA pgveil_audit FROM PUBLIC;
CREATE TABLE IF NOT EXISTS pgveil_audit.log (
    id               bigserial PRIMARY KEY,
    seq              bigint NOT NULL,
    prev_hash        text NOT NULL,
    time             timestamptz NOT NULL,
    event            text NOT NULL,
    session_id       text NOT NULL,
    user_name        text NOT NULL,
    role             text,
    view_set         text,
    purpose          text,
    client_addr      text,
    application_name text,
    statement        text,
    tables           jsonb NOT NULL,
    verdict          text NOT NULL,
    reason           text,
    rows             bigint,
    duration_us      bigint,
    sqlstate         text,
    line             text NOT NULL,
    UNIQUE (seq, prev_hash)
);
REVOKE ALL ON pgveil_audit.log FROM PUBLIC;
";

/// One row per record line; `line` keeps the exact bytes the chain hashes.
/// A retried batch that did reach the table is not inserted twice.
const INSERT: &str = "
INSERT INTO pgveil_audit.log (seq, prev_hash, time, event, session_id, user_name, role,
    view_set, purpose, client_addr, application_name, statement, tables, verdict, reason,
    rows, duration_us, sqlstate, line)
SELECT (r->>'seq')::bigint, r->>'prev_hash', (r->>'time')::timestamptz, r->>'event',
    r->>'session_id', r->>'user', r->>'role', r->>'view_set', r->>'purpose',
    r->>'client_addr', r->>'application_name', r->>'statement', r->'tables', r->>'verdict',
    r->>'reason', (r->>'rows')::bigint, (r->>'duration_us')::bigint, r->>'sqlstate', t
FROM unnest($1::text[]) WITH ORDINALITY AS u(t, n), LATERAL (SELECT t::jsonb AS r) AS j
ORDER BY n
ON CONFLICT (seq, prev_hash) DO NOTHING
";

const LAST: &str = "SELECT line FROM pgveil_audit.log ORDER BY id DESC LIMIT 1";

/// Serializes writers of the table (the proxy, `pgveil subject`) when the
/// table is the only sink.
const LOCK: &str = "SELECT pg_advisory_xact_lock(hashtext('pgveil_audit.log'))";

/// The table sink.
pub struct TableSink {
    pool: Pool,
    created: bool,
}

impl TableSink {
    /// A sink writing through `pool` (a role that may create the schema).
    pub fn new(pool: Pool) -> Self {
        TableSink {
            pool,
            created: false,
        }
    }

    /// Creates the table if needed and returns the last link stored in it.
    pub async fn recover(&mut self) -> Result<Link, AuditError> {
        let client = self.client().await?;
        last_link(&client).await
    }

    /// Appends the lines `render` makes from the table's last link, in one
    /// transaction under a lock shared with every other writer of the
    /// table; returns the new last link.
    pub async fn append_chained(
        &mut self,
        render: impl FnOnce(&Link) -> (Vec<String>, Link),
    ) -> Result<Link, AuditError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(table_error)?;
        tx.batch_execute(LOCK).await.map_err(table_error)?;
        let (lines, end) = render(&last_link(&tx).await?);
        tx.execute(INSERT, &[&lines]).await.map_err(table_error)?;
        tx.commit().await.map_err(table_error)?;
        Ok(end)
    }

    /// Inserts the record lines of one batch.
    pub async fn insert(&mut self, lines: &[String]) -> Result<(), AuditError> {
        let client = self.client().await?;
        client
            .execute(INSERT, &[&lines])
            .await
            .map_err(table_error)?;
        Ok(())
    }

    async fn client(&mut self) -> Result<deadpool_postgres::Object, AuditError> {
        let client = self
            .pool
            .get()
            .await
            .map_err(|e| AuditError::Table(e.to_string()))?;
        if !self.created {
            client.batch_execute(CREATE).await.map_err(table_error)?;
            self.created = true;
        }
        Ok(client)
    }
}

async fn last_link(client: &impl GenericClient) -> Result<Link, AuditError> {
    let row = client.query_opt(LAST, &[]).await.map_err(table_error)?;
    Ok(match row {
        Some(row) => {
            let line: String = row.try_get(0).map_err(table_error)?;
            let seq = serde_json::from_str::<ChainFields>(&line).map_or(0, |f| f.seq);
            Link {
                seq,
                hash: hash_line(line.as_bytes()),
            }
        }
        None => Link::genesis(),
    })
}

fn table_error(e: tokio_postgres::Error) -> AuditError {
    AuditError::Table(match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    })
}
