//! pgveil's private tables for data-subject rights, the keyed customer
//! reference, and the transaction helper.

use std::future::Future;

use tokio_postgres::Client;

use crate::policy::Policy;
use crate::views::hmac_sha256;

use super::SubjectError;

pub use crate::views::ident;

/// The private schema, quoted.
pub fn schema(policy: &Policy) -> String {
    ident(&policy.settings().private_schema)
}

const TABLES: &str = "
CREATE SCHEMA IF NOT EXISTS __P__;
REVOKE ALL ON SCHEMA __P__ FROM PUBLIC;
CREATE TABLE IF NOT EXISTS __P__.subject_key (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    key bytea NOT NULL);
INSERT INTO __P__.subject_key (key)
    SELECT sha256(convert_to(gen_random_uuid()::text || gen_random_uuid()::text, 'UTF8'))
    WHERE NOT EXISTS (SELECT 1 FROM __P__.subject_key);
CREATE TABLE IF NOT EXISTS __P__.corrections (
    id bigserial PRIMARY KEY,
    customer text NOT NULL,
    table_name text NOT NULL,
    column_name text NOT NULL,
    old_value text,
    new_value text,
    requested_by text NOT NULL,
    requested_at timestamptz NOT NULL DEFAULT now(),
    status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'approved', 'rejected')),
    reviewed_by text CHECK (reviewed_by <> requested_by),
    reviewed_at timestamptz,
    reason text);
CREATE TABLE IF NOT EXISTS __P__.destruction_log (
    id bigserial PRIMARY KEY,
    erased_at timestamptz NOT NULL DEFAULT now(),
    actor text NOT NULL,
    trigger text NOT NULL CHECK (trigger IN ('request', 'retention')),
    customer_ref text,
    rule text NOT NULL,
    policy_fingerprint text NOT NULL,
    tables jsonb NOT NULL);
CREATE TABLE IF NOT EXISTS __P__.anonymized_subjects (key text PRIMARY KEY);
REVOKE ALL ON __P__.subject_key, __P__.corrections, __P__.destruction_log,
    __P__.anonymized_subjects FROM PUBLIC;";

/// Creates the private tables if they are missing and revokes every
/// privilege of the policy's login roles on them.
pub async fn ensure(client: &Client, policy: &Policy) -> Result<(), SubjectError> {
    let p = schema(policy);
    transaction(client, async {
        client
            .batch_execute("SELECT pg_advisory_xact_lock(hashtext('pgveil subject tables'))")
            .await?;
        client.batch_execute(&TABLES.replace("__P__", &p)).await?;
        let roles: Vec<String> = policy.login_roles().into_iter().map(|r| r.name).collect();
        let existing = client
            .query(
                "SELECT rolname::text FROM pg_roles WHERE rolname = ANY ($1::text[])",
                &[&roles],
            )
            .await?;
        for row in existing {
            let role = ident(row.get(0));
            client
                .batch_execute(&format!(
                    "REVOKE ALL ON {p}.subject_key, {p}.corrections, {p}.destruction_log, \
                     {p}.anonymized_subjects FROM {role}"
                ))
                .await?;
        }
        Ok(())
    })
    .await
}

/// The keyed reference of `customer_id` (see [`super::customer_ref`]).
pub async fn customer_ref(
    client: &Client,
    policy: &Policy,
    customer_id: &str,
) -> Result<String, SubjectError> {
    let sql = format!("SELECT key FROM {}.subject_key", schema(policy));
    let key: Vec<u8> = client.query_one(&sql, &[]).await?.get(0);
    let mac = hmac_sha256(&key, format!("pgveil/subject/{customer_id}").as_bytes());
    Ok(mac.iter().map(|b| format!("{b:02x}")).collect())
}

/// Runs `work` in a transaction: committed if it succeeds, rolled back if not.
pub async fn transaction<T, F>(client: &Client, work: F) -> Result<T, SubjectError>
where
    F: Future<Output = Result<T, SubjectError>>,
{
    client.batch_execute("BEGIN").await?;
    match work.await {
        Ok(value) => {
            client.batch_execute("COMMIT").await?;
            Ok(value)
        }
        Err(e) => {
            // A failed ROLLBACK leaves nothing committed either.
            let _ = client.batch_execute("ROLLBACK").await;
            Err(e)
        }
    }
}
