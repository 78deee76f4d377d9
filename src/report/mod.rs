//! `pgveil report`: the privacy officer's report, as one self-contained
//! HTML file and the same content in Markdown.
//!
//! Facts are gathered from the policy and the live catalog (data model,
//! view sets with their installed SQL, roles and users, drift), from the
//! privacy log files (reads per classification, refusals, top statements),
//! from the consent data (opt-outs per purpose) and from the anonymous
//! views themselves (k-anonymity over their quasi-identifiers, read as each
//! view set's login role). `document` turns the facts into sections that
//! `html` and `markdown` render.

mod consent;
mod document;
mod facts;
mod gather;
mod html;
mod kanon;
mod log;
mod markdown;

use std::path::{Path, PathBuf};

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio_postgres::Client;

use crate::audit::AuditError;
use crate::policy::Policy;
use crate::views::{self, ViewsError};

pub use facts::{
    ColumnModel, DriftFacts, Facts, Groups, KFacts, LogFacts, PurposeFacts, ReadCount, Refusal,
    RoleFacts, TableModel, TopStatement, ViewSetFacts, REFUSALS_SHOWN, TOP_STATEMENTS, VIEW_KINDS,
};
pub use kanon::Logins;

/// Why the report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The database refused a query.
    #[error("database error: {}", crate::views::db_message(.0))]
    Db(#[from] tokio_postgres::Error),
    /// The catalog or the views could not be read.
    #[error(transparent)]
    Views(#[from] ViewsError),
    /// The privacy log could not be read.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// What a report is made from.
pub struct Sources<'a> {
    /// The policy.
    pub policy: &'a Policy,
    /// How to log in as the view sets' login roles.
    pub logins: Logins,
    /// The database in words, e.g. `crm on 127.0.0.1:5432`.
    pub database: String,
    /// Privacy log files, oldest first (none: no log section).
    pub audit_files: Vec<PathBuf>,
}

/// Gathers every fact of the report through the administrator connection
/// `client` (and the login roles, for k-anonymity).
pub async fn gather(client: &Client, sources: &Sources<'_>) -> Result<Facts, ReportError> {
    let policy = sources.policy;
    let catalog = views::read_catalog(client, &policy.settings().base_schema).await?;
    let view_sets = gather::view_sets(client, policy).await?;
    let drift = gather::drift(client, policy, &catalog, &sources.logins.secret).await?;
    let log = match sources.audit_files.as_slice() {
        [] => None,
        files => Some(log::summarize(files)?),
    };
    Ok(Facts {
        generated_at: OffsetDateTime::now_utc()
            .format(&Rfc3339)
            .unwrap_or_default(),
        database: sources.database.clone(),
        tables: gather::data_model(policy, &catalog),
        view_sets,
        roles: gather::roles(policy),
        drift,
        log,
        consent: consent::purposes(client, policy).await?,
        k_anonymity: kanon::measure(&sources.logins, policy, &catalog).await,
    })
}

/// The files [`write`] wrote.
#[derive(Debug, Clone)]
pub struct Written {
    /// `report.html`.
    pub html: PathBuf,
    /// `report.md`.
    pub markdown: PathBuf,
}

/// Writes `report.html` and `report.md` into `dir`, creating it if needed.
pub fn write(facts: &Facts, dir: &Path) -> Result<Written, ReportError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ReportError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let doc = document::build(facts);
    let written = Written {
        html: dir.join("report.html"),
        markdown: dir.join("report.md"),
    };
    std::fs::write(&written.html, html::render(&doc)).map_err(io(&written.html))?;
    std::fs::write(&written.markdown, markdown::render(&doc)).map_err(io(&written.markdown))?;
    Ok(written)
}
