//! Policy → PostgreSQL: one schema of views per view set (`security_barrier`
//! where they hide rows), indexes over masked indexed columns,
//! one backend LOGIN role per view set and attribute values, private tables
//! for keys and user attributes; plus the fingerprint, drift report and
//! checks against the live catalog.

mod apply;
mod catalog;
mod check;
mod ddl;
mod mask_sql;
mod masked_index;
mod secret;

use std::fmt;

use sha2::{Digest, Sha256};
use tokio_postgres::Client;

use crate::policy::{Location, Policy};

pub use catalog::{read_catalog, Catalog, CatalogColumn, CatalogTable, ForeignKey, TypeCategory};
pub use check::findings;
pub use ddl::DdlProblem;
pub use mask_sql::ident;
pub use secret::{hmac_sha256, login_password, mask_key};

/// Errors of the views layer.
#[derive(Debug, thiserror::Error)]
pub enum ViewsError {
    /// The database refused a query.
    #[error("database error: {}", db_message(.0))]
    Db(#[from] tokio_postgres::Error),
    /// The policy does not fit the database's tables.
    #[error("the policy does not fit the database:\n{}", problems(.0))]
    Plan(Vec<DdlProblem>),
    /// One installation statement failed; nothing was committed.
    #[error("statement failed ({}): {statement}", db_message(.source))]
    Statement {
        /// The statement.
        statement: String,
        /// The database error.
        source: tokio_postgres::Error,
    },
}

/// A database error as `SQLSTATE: message` (or the client's own text).
pub fn db_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

fn problems(list: &[DdlProblem]) -> String {
    list.iter()
        .map(|p| match &p.location {
            Some(loc) => format!("  {loc}: {}", p.message),
            None => format!("  {}", p.message),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// What `apply` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    /// Statements executed.
    pub statements: usize,
    /// Managed objects whose state changed: `- old` / `+ new` lines. Empty
    /// when the database already matched the policy.
    pub changes: Vec<String>,
    /// The fingerprint now installed.
    pub fingerprint: String,
}

impl ApplyReport {
    /// Whether the database differed from the policy (drift was fixed).
    pub fn changed(&self) -> bool {
        !self.changes.is_empty()
    }
}

/// How serious a check finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// `apply` would fail or the policy is unsafe.
    Error,
    /// Probably not what was meant.
    Warning,
    /// Worth knowing.
    Info,
}

/// One result of [`check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckFinding {
    /// How serious it is.
    pub severity: Severity,
    /// The policy line it is about, if any.
    pub location: Option<Location>,
    /// What was found, with the fix.
    pub message: String,
}

impl fmt::Display for CheckFinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = format!("{:?}", self.severity).to_lowercase();
        match &self.location {
            Some(loc) => write!(f, "{loc}: {sev}: {}", self.message),
            None => write!(f, "{sev}: {}", self.message),
        }
    }
}

/// The fingerprint of a policy's meaning (not its formatting or comments).
pub fn fingerprint(policy: &Policy) -> String {
    let json = serde_json::to_string(policy).unwrap_or_default();
    let mut h = Sha256::new();
    h.update(concat!("pgveil ", env!("CARGO_PKG_VERSION"), "\n"));
    h.update(json.as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The DDL that installs `policy` over `catalog` (what `--dry-run` prints);
/// mask keys are not shown.
pub fn ddl(policy: &Policy, catalog: &Catalog, secret: &[u8]) -> Result<Vec<String>, ViewsError> {
    let steps =
        ddl::plan(policy, catalog, secret, &fingerprint(policy)).map_err(ViewsError::Plan)?;
    Ok(ddl::render(&steps))
}

/// Installs `policy` in one transaction; idempotent. The report lists the
/// drift it fixed (nothing on a second run).
pub async fn apply(
    client: &Client,
    policy: &Policy,
    secret: &[u8],
) -> Result<ApplyReport, ViewsError> {
    apply::apply(client, policy, secret).await
}

/// What `apply` would change (the drift between policy and database),
/// without changing anything.
pub async fn drift(
    client: &Client,
    policy: &Policy,
    secret: &[u8],
) -> Result<Vec<String>, ViewsError> {
    apply::drift(client, policy, secret).await
}

/// Checks `policy` against the live catalog.
pub async fn check(client: &Client, policy: &Policy) -> Result<Vec<CheckFinding>, ViewsError> {
    check::check(client, policy).await
}

/// The fingerprint stored by the last `apply`, if any.
pub async fn installed_fingerprint(
    client: &Client,
    policy: &Policy,
) -> Result<Option<String>, ViewsError> {
    let private = policy.settings().private_schema;
    let row = client
        .query_one(
            "SELECT to_regclass(format('%I.installed', $1::text)) IS NOT NULL",
            &[&private],
        )
        .await?;
    if !row.get::<_, bool>(0) {
        return Ok(None);
    }
    let sql = format!(
        "SELECT fingerprint FROM {}.installed",
        mask_sql::ident(&private)
    );
    Ok(client.query_opt(&sql, &[]).await?.map(|r| r.get(0)))
}
