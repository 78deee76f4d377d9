//! Installing a policy in one transaction and reporting the drift it fixed.
//!
//! `apply` snapshots every object pgveil manages (schemas, views and their
//! definitions, grants, roles and their settings, private table contents)
//! before and after running the DDL; the difference is the drift it fixed.
//! A second run with the same policy and secret finds no difference.

use std::collections::BTreeSet;

use tokio_postgres::Client;

use crate::policy::Policy;

use super::catalog::read_catalog;
use super::ddl::{plan, Step, ROLE_MARK, SCHEMA_MARK};
use super::{fingerprint, ApplyReport, ViewsError};

/// Installs `policy` (see [`super::apply`]).
pub async fn apply(
    client: &Client,
    policy: &Policy,
    secret: &[u8],
) -> Result<ApplyReport, ViewsError> {
    client.batch_execute("BEGIN").await?;
    match run(client, policy, secret).await {
        Ok(report) => {
            client.batch_execute("COMMIT").await?;
            Ok(report)
        }
        Err(e) => {
            // The transaction is abandoned either way; a failed ROLLBACK
            // leaves nothing committed.
            let _ = client.batch_execute("ROLLBACK").await;
            Err(e)
        }
    }
}

/// The changes `apply` would make, found by running it in a transaction
/// that is always rolled back; it waits at most 2 s for each lock, so it
/// does not hold up sessions reading the views for long.
pub async fn drift(
    client: &Client,
    policy: &Policy,
    secret: &[u8],
) -> Result<Vec<String>, ViewsError> {
    client
        .batch_execute("BEGIN; SET LOCAL lock_timeout = '2s'")
        .await?;
    let result = run(client, policy, secret).await;
    let rolled_back = client.batch_execute("ROLLBACK").await;
    let report = result?;
    rolled_back?;
    Ok(report.changes)
}

async fn run(client: &Client, policy: &Policy, secret: &[u8]) -> Result<ApplyReport, ViewsError> {
    client
        .batch_execute("SELECT pg_advisory_xact_lock(hashtext('pgveil apply'))")
        .await?;
    let settings = policy.settings();
    let catalog = read_catalog(client, &settings.base_schema).await?;
    let fp = fingerprint(policy);
    let steps = plan(policy, &catalog, secret, &fp).map_err(ViewsError::Plan)?;
    let before = snapshot(client, policy).await?;
    for step in &steps {
        execute(client, &settings.private_schema, step).await?;
    }
    let after = snapshot(client, policy).await?;
    let mut changes: Vec<String> = before
        .difference(&after)
        .map(|l| format!("- {}", shorten(l)))
        .collect();
    changes.extend(
        after
            .difference(&before)
            .map(|l| format!("+ {}", shorten(l))),
    );
    Ok(ApplyReport {
        statements: steps.len(),
        changes,
        fingerprint: fp,
    })
}

fn shorten(line: &str) -> String {
    const MAX: usize = 200;
    match line.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", &line[..i]),
        None => line.to_string(),
    }
}

async fn execute(client: &Client, private: &str, step: &Step) -> Result<(), ViewsError> {
    let failed = |statement: &str, source| ViewsError::Statement {
        statement: statement.to_string(),
        source,
    };
    match step {
        Step::Sql(sql) => client.batch_execute(sql).await.map_err(|e| failed(sql, e)),
        Step::Keys(rows) => {
            let p = super::mask_sql::ident(private);
            let delete = format!("DELETE FROM {p}.keys");
            client
                .batch_execute(&delete)
                .await
                .map_err(|e| failed(&delete, e))?;
            let insert = format!(
                "INSERT INTO {p}.keys (view_set, purpose, ipad, opad) VALUES ($1, $2, $3, $4)"
            );
            for r in rows {
                client
                    .execute(&insert, &[&r.view_set, &r.purpose, &r.ipad, &r.opad])
                    .await
                    .map_err(|e| failed(&insert, e))?;
            }
            Ok(())
        }
    }
}

const SNAPSHOT: &str = "
WITH managed_schemas AS (
    SELECT n.oid, n.nspname FROM pg_namespace n
    WHERE n.nspname = ANY ($1::text[])
       OR obj_description(n.oid, 'pg_namespace') LIKE '__SCHEMA_MARK__%'
), managed_roles AS (
    SELECT r.* FROM pg_roles r
    WHERE r.rolname = ANY ($2::text[])
       OR shobj_description(r.oid, 'pg_authid') LIKE '__ROLE_MARK__%'
)
SELECT 'schema ' || s.nspname || ' acl=' || coalesce(n.nspacl::text, '')
       || ' comment=' || coalesce(obj_description(n.oid, 'pg_namespace'), '')
FROM managed_schemas s JOIN pg_namespace n ON n.oid = s.oid
UNION ALL
SELECT 'relation ' || s.nspname || '.' || c.relname || ' kind=' || c.relkind::text
       || ' options=' || coalesce(c.reloptions::text, '') || ' acl=' || coalesce(c.relacl::text, '')
       || ' def=' || coalesce(pg_get_viewdef(c.oid), '')
FROM pg_class c JOIN managed_schemas s ON s.oid = c.relnamespace
WHERE c.relkind IN ('r', 'v', 'm', 'S', 'f', 'p')
UNION ALL
SELECT 'index ' || s.nspname || '.' || c.relname || ' ' || pg_get_indexdef(c.oid)
FROM pg_class c JOIN managed_schemas s ON s.oid = c.relnamespace
WHERE c.relkind = 'i' AND c.relname::text LIKE 'pgveil\\_mask\\_%'
UNION ALL
SELECT 'column ' || s.nspname || '.' || c.relname || '.' || a.attname || ' acl=' || a.attacl::text
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN managed_schemas s ON s.oid = c.relnamespace
WHERE a.attacl IS NOT NULL
UNION ALL
SELECT 'role ' || r.rolname || ' login=' || r.rolcanlogin || ' inherit=' || r.rolinherit
       || ' super=' || r.rolsuper || ' createdb=' || r.rolcreatedb || ' createrole=' || r.rolcreaterole
       || ' replication=' || r.rolreplication || ' bypassrls=' || r.rolbypassrls
       || ' config=' || coalesce(r.rolconfig::text, '')
       || ' comment=' || coalesce(shobj_description(r.oid, 'pg_authid'), '')
FROM managed_roles r
UNION ALL
SELECT 'member ' || r.rolname || ' of ' || g.rolname
FROM pg_auth_members m JOIN managed_roles r ON r.oid = m.member JOIN pg_roles g ON g.oid = m.roleid
UNION ALL
SELECT 'database acl=' || coalesce(datacl::text, '') FROM pg_database WHERE datname = current_database()";

const PASSWORDS: &str = "
SELECT 'password ' || rolname || ' ' || md5(coalesce(rolpassword, ''))
FROM pg_authid WHERE rolname = ANY ($1::text[])";

/// Everything pgveil manages, one line per object state.
async fn snapshot(client: &Client, policy: &Policy) -> Result<BTreeSet<String>, ViewsError> {
    let settings = policy.settings();
    let mut schemas: Vec<String> = policy
        .view_sets()
        .keys()
        .map(|n| policy.schema_of(n))
        .collect();
    schemas.push(settings.private_schema.clone());
    schemas.push(settings.base_schema.clone());
    let roles: Vec<String> = policy.login_roles().into_iter().map(|r| r.name).collect();
    let sql = SNAPSHOT
        .replace("__SCHEMA_MARK__", SCHEMA_MARK)
        .replace("__ROLE_MARK__", ROLE_MARK);
    let mut lines = BTreeSet::new();
    for row in client.query(&sql, &[&schemas, &roles]).await? {
        lines.insert(row.get::<_, String>(0));
    }
    let superuser: bool = client
        .query_one(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await?
        .get(0);
    if superuser {
        for row in client.query(PASSWORDS, &[&roles]).await? {
            lines.insert(row.get::<_, String>(0));
        }
    }
    lines.extend(private_contents(client, &settings.private_schema).await?);
    Ok(lines)
}

async fn private_contents(client: &Client, private: &str) -> Result<Vec<String>, ViewsError> {
    let p = super::mask_sql::ident(private);
    let exists: bool = client
        .query_one(
            "SELECT to_regclass(format('%I.installed', $1::text)) IS NOT NULL",
            &[&private],
        )
        .await?
        .get(0);
    if !exists {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT 'keys ' || md5(coalesce(string_agg(view_set || '/' || purpose || '/' || encode(ipad, 'hex') \
         || '/' || encode(opad, 'hex'), ',' ORDER BY view_set, purpose), '')) FROM {p}.keys \
         UNION ALL SELECT 'attribute ' || login_role || ' ' || attribute || '=' || value FROM {p}.login_attributes \
         UNION ALL SELECT 'installed ' || fingerprint FROM {p}.installed"
    );
    Ok(client
        .query(&sql, &[])
        .await?
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect())
}
