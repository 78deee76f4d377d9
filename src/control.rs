//! The control plane: administrator connections to PostgreSQL through
//! deadpool-postgres, loading the policy, and checking that the installed
//! views match it. Used by `apply`, `check`, `serve` and the reports.

use std::sync::Arc;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};

use crate::audit::{ProtectedColumn, ProtectedTable, TableCatalog};
use crate::config::{BackendTls, Config, ConfigError};
use crate::policy::{MaskName, Policy, PolicyError};
use crate::rewrite::Rewriter;
use crate::subject;
use crate::views::{self, ViewsError};

/// Verdicts cached per server (statement texts × view sets).
const REWRITE_CACHE_CAPACITY: usize = 20_000;

/// Errors of the control plane.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Configuration or secrets.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The policy files.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// Installing or reading the views.
    #[error(transparent)]
    Views(#[from] ViewsError),
    /// Reaching PostgreSQL as the administrator.
    #[error("cannot reach PostgreSQL as {user}@{host}:{port}/{database}: {message}")]
    Connect {
        /// Administrator login.
        user: String,
        /// Host.
        host: String,
        /// Port.
        port: u16,
        /// Database.
        database: String,
        /// Why.
        message: String,
    },
    /// A data-subject request failed.
    #[error(transparent)]
    Subject(#[from] crate::subject::SubjectError),
    /// The privacy log could not be opened or written.
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    /// The report could not be made.
    #[error(transparent)]
    Report(#[from] crate::report::ReportError),
    /// Something the operator must do first.
    #[error("{0}")]
    Precondition(String),
    /// A data-subject request was carried out, but its privacy-log record
    /// could not be written.
    #[error("{output}\nthe request was carried out, but its privacy-log record was not written: {error}")]
    Unlogged {
        /// What the request printed.
        output: String,
        /// Why the record was not written.
        error: crate::audit::AuditError,
    },
}

/// A pool of administrator connections for the control plane.
pub fn admin_pool(config: &Config) -> Result<Pool, ControlError> {
    let backend = &config.backend;
    if backend.tls == BackendTls::Require {
        return Err(ControlError::Precondition(format!(
            "{}: backend.tls = \"require\" is supported on the data path only; the control plane (apply, check, report) connects without TLS — use \"prefer\" or run them from a trusted network",
            config.source.display()
        )));
    }
    let mut pg = tokio_postgres::Config::new();
    pg.host(&backend.host)
        .port(backend.port)
        .dbname(&backend.database)
        .user(&backend.user)
        .password(config.backend_password()?)
        .application_name("pgveil-control")
        .connect_timeout(config.timeouts.connect());
    let manager = Manager::from_config(
        pg,
        tokio_postgres::NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(4)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .map_err(|e| ControlError::Precondition(format!("cannot build the control pool: {e}")))
}

/// One administrator connection from the pool.
pub async fn admin_client(
    config: &Config,
    pool: &Pool,
) -> Result<deadpool_postgres::Object, ControlError> {
    pool.get().await.map_err(|e| ControlError::Connect {
        user: config.backend.user.clone(),
        host: config.backend.host.clone(),
        port: config.backend.port,
        database: config.backend.database.clone(),
        message: match &e {
            deadpool_postgres::PoolError::Backend(db) => db
                .as_db_error()
                .map(|d| d.message().to_owned())
                .unwrap_or_else(|| db.to_string()),
            other => other.to_string(),
        },
    })
}

/// Loads the policy the configuration names.
pub fn load_policy(config: &Config) -> Result<Policy, ControlError> {
    let path = config.policy.as_ref().ok_or_else(|| {
        ControlError::Precondition(format!(
            "{}: no policy configured; add policy = \"path/to/policies\" at the top",
            config.source.display()
        ))
    })?;
    Ok(Policy::load(std::slice::from_ref(path))?)
}

/// The master secret of view-set login roles and masks; required with a policy.
pub fn role_secret(config: &Config) -> Result<Vec<u8>, ControlError> {
    match config.role_secret()? {
        Some(secret) if secret.len() >= 16 => Ok(secret.into_bytes()),
        Some(_) => Err(ControlError::Precondition(format!(
            "{}: the role secret must be at least 16 characters",
            config.source.display()
        ))),
        None => Err(ControlError::Precondition(format!(
            "{}: a policy needs backend.role_secret_env or backend.role_secret_file (a long random secret)",
            config.source.display()
        ))),
    }
}

/// Refuses when the views installed in the database do not match the policy.
pub async fn verify_installed(
    client: &tokio_postgres::Client,
    policy: &Policy,
    config: &Config,
) -> Result<(), ControlError> {
    let expected = views::fingerprint(policy);
    match views::installed_fingerprint(client, policy).await? {
        Some(installed) if installed == expected => Ok(()),
        Some(_) => Err(ControlError::Precondition(format!(
            "the views installed in the database do not match the policy; run: pgveil apply --config {}",
            config.source.display()
        ))),
        None => Err(ControlError::Precondition(format!(
            "no pgveil views are installed in the database; run: pgveil apply --config {}",
            config.source.display()
        ))),
    }
}

/// The policy with what the data path derives from it.
pub struct PolicyRuntime {
    /// The loaded policy.
    pub policy: Policy,
    /// The rewriter over its protected tables.
    pub rewriter: Arc<Rewriter>,
    /// The master secret (for view-set login passwords).
    pub secret: Vec<u8>,
    /// The protected tables and columns the privacy log looks for.
    pub audit_catalog: TableCatalog,
}

impl PolicyRuntime {
    /// Loads and checks the policy against the installed views.
    pub async fn load(config: &Config, pool: &Pool) -> Result<PolicyRuntime, ControlError> {
        let policy = load_policy(config)?;
        let secret = role_secret(config)?;
        let client = admin_client(config, pool).await?;
        verify_installed(&client, &policy, config).await?;
        let catalog = views::read_catalog(&client, &policy.settings().base_schema).await?;
        let rewriter = Arc::new(Rewriter::new(
            policy.protected_tables(),
            REWRITE_CACHE_CAPACITY,
        ));
        Ok(PolicyRuntime {
            audit_catalog: audit_catalog(&policy, &catalog),
            policy,
            rewriter,
            secret,
        })
    }
}

/// The privacy log's view of the policy: every policy table in the
/// database with each of its columns, the column's classification and the
/// view sets whose views leave it out.
pub fn audit_catalog(policy: &Policy, catalog: &views::Catalog) -> TableCatalog {
    let schema = policy.settings().base_schema;
    let tables = policy.tables().keys().filter_map(|table| {
        let base = catalog.tables.get(table)?;
        let columns = base
            .columns
            .iter()
            .map(|column| ProtectedColumn {
                name: column.name.clone(),
                classification: policy
                    .column_def(table, &column.name)
                    .map(|(_, def, _)| def.class.name().to_owned()),
                hidden_in: policy
                    .view_sets()
                    .iter()
                    .filter(|(_, set)| {
                        policy.mask_for(set.get(), table, &column.name).spec.mask == MaskName::Hide
                    })
                    .map(|(name, _)| name.clone())
                    .collect(),
            })
            .collect();
        Some(ProtectedTable {
            schema: schema.clone(),
            table: table.clone(),
            columns,
        })
    });
    TableCatalog::new(tables)
}

/// `pgveil apply`: installs the policy's views (or, with `dry_run`, returns
/// the DDL it would run). Returns the text to print.
pub async fn apply(config: &Config, dry_run: bool) -> Result<String, ControlError> {
    let policy = load_policy(config)?;
    let secret = role_secret(config)?;
    let pool = admin_pool(config)?;
    let client = admin_client(config, &pool).await?;
    if dry_run {
        let catalog = views::read_catalog(&client, &policy.settings().base_schema).await?;
        let statements = views::ddl(&policy, &catalog, &secret)?;
        return Ok(statements.iter().map(|s| format!("{s};\n")).collect());
    }
    let report = views::apply(&client, &policy, &secret).await?;
    let mut out = format!(
        "applied {} statements; fingerprint {}\n",
        report.statements, report.fingerprint
    );
    if report.changed() {
        out.push_str("changes (drift fixed):\n");
        for change in &report.changes {
            out.push_str(&format!("  {change}\n"));
        }
    } else {
        out.push_str("no changes: the database already matched the policy\n");
    }
    Ok(out)
}

/// `pgveil check`: validates the policy against the live catalog. Returns
/// the findings as text and whether any is an error.
pub async fn check(config: &Config) -> Result<(String, bool), ControlError> {
    let policy = load_policy(config)?;
    let pool = admin_pool(config)?;
    let client = admin_client(config, &pool).await?;
    let findings = views::check(&client, &policy).await?;
    let errors = findings
        .iter()
        .any(|f| f.severity == views::Severity::Error);
    let mut out: String = findings.iter().map(|f| format!("{f}\n")).collect();
    if findings.is_empty() {
        out.push_str("ok: the policy fits the database\n");
    }
    Ok((out, errors))
}

/// What the rewriter needs to know about a session's grant.
pub fn target_for(grant: &crate::policy::SessionGrant) -> crate::rewrite::Target {
    crate::rewrite::Target {
        schema: grant.schema.clone().unwrap_or_default(),
        admin: grant.kind == crate::policy::ViewKind::Admin,
        read_only: grant.read_only,
        min_group_size: grant.min_group_size,
    }
}

/// `pgveil explain`: the view set a user gets and what happens to one
/// statement, without touching the database.
pub fn explain(
    config: &Config,
    user: &str,
    view: Option<&str>,
    sql: &str,
) -> Result<String, ControlError> {
    use crate::rewrite::Verdict;
    let policy = load_policy(config)?;
    let grant = policy.resolve_session(user, view)?;
    let target = target_for(&grant);
    let mut out = format!(
        "user:       {user}\nview set:   {} ({:?})\nschema:     {}\nlogin role: {}\n",
        grant.view_set,
        grant.kind,
        grant.schema.as_deref().unwrap_or("(base tables)"),
        grant.login_role.as_deref().unwrap_or(&config.backend.user),
    );
    if let Some(k) = grant.min_group_size {
        out.push_str(&format!("min group:  {k} rows per aggregate group\n"));
    }
    let rewriter = Rewriter::new(policy.protected_tables(), 16);
    match rewriter.rewrite(&target, sql) {
        Verdict::Forward if target.admin => {
            out.push_str("verdict:    forwarded unchanged (administrator)\n")
        }
        Verdict::Forward => {
            out.push_str("verdict:    forwarded unchanged (no protected table is named)\n")
        }
        Verdict::Rewritten(new) => {
            out.push_str(&format!(
                "verdict:    rewritten: every protected table now reads the view in {}\nSQL:        {new}\n",
                target.schema
            ));
        }
        Verdict::Refused(r) => {
            out.push_str(&format!(
                "verdict:    refused with SQLSTATE {}: {}\n",
                r.sqlstate, r.message
            ));
            if let Some(hint) = r.hint {
                out.push_str(&format!("hint:       {hint}\n"));
            }
        }
    }
    Ok(out)
}

/// `pgveil load-crm`: creates the example CRM schema and loads generated data.
pub async fn load_crm(
    config: &Config,
    options: &crate::crm::LoadOptions,
) -> Result<crate::crm::LoadReport, ControlError> {
    let pool = admin_pool(config)?;
    let client = admin_client(config, &pool).await?;
    crate::crm::load(&client, options)
        .await
        .map_err(|e| ControlError::Precondition(format!("loading the example CRM: {e}")))
}

/// What data-subject requests need: the policy, the configuration (for
/// the privacy log) and a pool of administrator connections. The command
/// line runs one request; `pgveil subject serve` runs many.
pub struct SubjectDesk {
    config: Config,
    policy: Policy,
    pool: Pool,
}

impl SubjectDesk {
    /// Loads the policy and builds the administrator pool (connecting lazily).
    pub fn new(config: &Config) -> Result<SubjectDesk, ControlError> {
        Ok(SubjectDesk {
            policy: load_policy(config)?,
            pool: admin_pool(config)?,
            config: config.clone(),
        })
    }

    /// Carries out `request` as `actor` and writes its records (or its
    /// failure) to the privacy log. Nothing is done when the log cannot be
    /// opened.
    pub async fn run(
        &self,
        request: subject::Request,
        actor: &str,
    ) -> Result<subject::Done, ControlError> {
        let log =
            subject::SubjectLog::open(self.config.audit.clone(), Some(self.pool.clone()), actor)
                .await?;
        let client = admin_client(&self.config, &self.pool).await?;
        let (action, purpose) = (request.action(), request.purpose().map(str::to_owned));
        let result = subject::run(&client, &self.policy, request, actor).await;
        let logged = log
            .finish(&self.policy, action, purpose.as_deref(), &result)
            .await;
        let done = result?;
        logged.map_err(|e| ControlError::Unlogged {
            output: done.output.clone(),
            error: e,
        })?;
        Ok(done)
    }
}

/// `pgveil subject ...` and `pgveil retention run`: runs one data-subject
/// request and returns what to print.
pub async fn subject(
    config: &Config,
    request: subject::Request,
    actor: &str,
) -> Result<String, ControlError> {
    let done = SubjectDesk::new(config)?.run(request, actor).await?;
    Ok(done.output + "\n")
}

/// `pgveil report`: gathers the report's facts from the policy, the
/// database and the privacy log files `audit` (oldest first; none: the
/// `[audit]` file and its rotated files, if written yet) and writes
/// `report.html` and `report.md` into `out`.
pub async fn report(
    config: &Config,
    audit: Vec<std::path::PathBuf>,
    out: &std::path::Path,
) -> Result<crate::report::Written, ControlError> {
    let policy = load_policy(config)?;
    let secret = role_secret(config)?;
    let pool = admin_pool(config)?;
    let client = admin_client(config, &pool).await?;
    let backend = &config.backend;
    let mut login = tokio_postgres::Config::new();
    login
        .host(&backend.host)
        .port(backend.port)
        .dbname(&backend.database)
        .application_name("pgveil-report")
        .connect_timeout(config.timeouts.connect());
    let audit_files = match (
        audit.is_empty(),
        config.audit.as_ref().and_then(|a| a.file.as_ref()),
    ) {
        // A log not written yet has no section rather than an error.
        (true, Some(file)) => crate::audit::log_files(file)
            .into_iter()
            .filter(|f| f.exists())
            .collect(),
        _ => audit,
    };
    let sources = crate::report::Sources {
        policy: &policy,
        logins: crate::report::Logins {
            config: login,
            secret,
        },
        database: format!("{} on {}:{}", backend.database, backend.host, backend.port),
        audit_files,
    };
    let facts = crate::report::gather(&client, &sources).await?;
    Ok(crate::report::write(&facts, out)?)
}
