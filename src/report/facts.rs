//! What the report says, as plain data: gathered from the policy, the live
//! database and the privacy log, rendered to HTML and Markdown.

use std::path::PathBuf;

use crate::policy::ViewKind;

/// The view kinds the data model shows a mask for, in column order.
pub const VIEW_KINDS: [ViewKind; 5] = [
    ViewKind::Standard,
    ViewKind::Personal,
    ViewKind::Anonymous,
    ViewKind::OptOut,
    ViewKind::Selective,
];

/// Everything the report shows.
#[derive(Debug, Clone)]
pub struct Facts {
    /// When the report was made (RFC 3339, UTC).
    pub generated_at: String,
    /// The database reported on, e.g. `crm on 127.0.0.1:5432`.
    pub database: String,
    /// The protected tables and their columns.
    pub tables: Vec<TableModel>,
    /// The view sets with their installed views.
    pub view_sets: Vec<ViewSetFacts>,
    /// The roles with their users.
    pub roles: Vec<RoleFacts>,
    /// Differences between the policy and the database.
    pub drift: DriftFacts,
    /// What the privacy log holds; None without log files.
    pub log: Option<LogFacts>,
    /// Consent per purpose.
    pub consent: Vec<PurposeFacts>,
    /// k-anonymity measured per anonymous view set.
    pub k_anonymity: Vec<KFacts>,
}

/// One protected table of the logical data model.
#[derive(Debug, Clone)]
pub struct TableModel {
    /// Table name.
    pub name: String,
    /// Whether the table exists in the database.
    pub exists: bool,
    /// Its erase rule, e.g. `anonymize`.
    pub erase: Option<String>,
    /// Its retention rule in words.
    pub retention: Option<String>,
    /// Its columns (from the database; policy entries when it is missing).
    pub columns: Vec<ColumnModel>,
}

/// One column of the data model.
#[derive(Debug, Clone)]
pub struct ColumnModel {
    /// Column name (or pattern, for a table missing from the database).
    pub name: String,
    /// SQL type, when the column exists.
    pub type_name: Option<String>,
    /// Classification; None when the policy does not classify it.
    pub class: Option<String>,
    /// Kind, e.g. `email`.
    pub kind: Option<String>,
    /// The mask in words per entry of [`VIEW_KINDS`].
    pub masks: Vec<String>,
}

/// One view set.
#[derive(Debug, Clone)]
pub struct ViewSetFacts {
    /// Its name.
    pub name: String,
    /// Its kind.
    pub kind: String,
    /// What it is for.
    pub description: Option<String>,
    /// The schema of its views.
    pub schema: String,
    /// Purpose, disclosure, minimum group size, anonymized fields: the
    /// kind-specific settings in words.
    pub settings: Vec<String>,
    /// Row filters: table and condition.
    pub row_filters: Vec<(String, String)>,
    /// Its backend login roles.
    pub login_roles: Vec<String>,
    /// The views as installed: name and `pg_get_viewdef` text.
    pub views: Vec<(String, String)>,
}

/// One role of the policy.
#[derive(Debug, Clone)]
pub struct RoleFacts {
    /// Its name.
    pub name: String,
    /// What it is.
    pub description: Option<String>,
    /// Whether it is the top administrator (base tables).
    pub admin: bool,
    /// The view sets it may use.
    pub view_sets: Vec<String>,
    /// The one used when a client asks for none.
    pub default: Option<String>,
    /// Its users with their attributes in words.
    pub users: Vec<(String, String)>,
}

/// How the database differs from the policy.
#[derive(Debug, Clone)]
pub struct DriftFacts {
    /// The policy's fingerprint.
    pub policy_fingerprint: String,
    /// The fingerprint `apply` stored, if any.
    pub installed_fingerprint: Option<String>,
    /// Findings of `pgveil check`, as it prints them.
    pub findings: Vec<String>,
    /// The changes `apply` would make (from a rolled-back run).
    pub changes: Vec<String>,
    /// Why the changes could not be computed, if they could not.
    pub changes_error: Option<String>,
}

/// What the privacy log holds.
#[derive(Debug, Clone)]
pub struct LogFacts {
    /// The files read, oldest first, with their record counts.
    pub files: Vec<(PathBuf, u64)>,
    /// `pgveil audit verify` over the files, as it prints it.
    pub verification: String,
    /// Whether the chain is intact.
    pub intact: bool,
    /// Records read.
    pub records: u64,
    /// Lines that were not records.
    pub unreadable: u64,
    /// Time of the first and last record.
    pub span: Option<(String, String)>,
    /// Statements that ran, per user and classification read.
    pub reads: Vec<ReadCount>,
    /// Refused statements, newest last (at most [`REFUSALS_SHOWN`]).
    pub refused: Vec<Refusal>,
    /// All refused statements counted per reason, most frequent first.
    pub refusal_reasons: Vec<(String, u64)>,
    /// The most frequent statements per view set.
    pub top_statements: Vec<(String, Vec<TopStatement>)>,
    /// Failed logins per user name tried.
    pub failed_logins: Vec<(String, u64)>,
    /// Data-subject requests per action and verdict.
    pub subject_actions: Vec<(String, String, u64)>,
}

/// How many refused statements the report lists one by one.
pub const REFUSALS_SHOWN: usize = 50;

/// How many statements per view set the report lists.
pub const TOP_STATEMENTS: usize = 10;

/// Statements of one user that read columns of one classification.
#[derive(Debug, Clone)]
pub struct ReadCount {
    /// The proxy user.
    pub user: String,
    /// The classification (`unclassified` for columns the policy omits).
    pub class: String,
    /// Statements that ran and used such a column.
    pub statements: u64,
}

/// One refused statement.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// When.
    pub time: String,
    /// Who.
    pub user: String,
    /// Through which view set.
    pub view_set: String,
    /// The normalized statement.
    pub statement: String,
    /// Why.
    pub reason: String,
    /// The SQLSTATE sent.
    pub sqlstate: String,
}

/// One frequent statement of a view set.
#[derive(Debug, Clone)]
pub struct TopStatement {
    /// The normalized statement.
    pub statement: String,
    /// How often it ran.
    pub count: u64,
    /// Rows returned or affected in all.
    pub rows: u64,
    /// Mean duration in milliseconds.
    pub mean_ms: f64,
}

/// Consent for one purpose.
#[derive(Debug, Clone)]
pub struct PurposeFacts {
    /// The purpose.
    pub name: String,
    /// `opt_out` or `opt_in` (`unknown` for purposes only the data names).
    pub basis: String,
    /// Where consent is recorded, e.g. `consents` or `customers.ok_to_call`.
    pub source: String,
    /// Subjects who refused (opted out).
    pub refused: u64,
    /// Subjects who granted consent.
    pub granted: u64,
    /// Subjects with no recorded choice.
    pub no_record: u64,
    /// Subjects the purpose's view sets leave out (refused, plus no record
    /// for opt-in purposes).
    pub excluded: u64,
}

/// k-anonymity of one anonymous view set over one table.
#[derive(Debug, Clone)]
pub struct KFacts {
    /// The view set.
    pub view_set: String,
    /// Its `min_group_size`.
    pub configured_k: Option<u32>,
    /// The login role the rows were read as.
    pub login_role: String,
    /// The table (view) measured.
    pub table: String,
    /// The quasi-identifier columns.
    pub quasi_identifiers: Vec<String>,
    /// Whether they come from the policy (else the default choice).
    pub from_policy: bool,
    /// The measurement, or why it failed.
    pub measured: Result<Groups, String>,
}

/// Group sizes over the quasi-identifiers.
#[derive(Debug, Clone)]
pub struct Groups {
    /// Rows in the view.
    pub rows: u64,
    /// Distinct combinations of quasi-identifier values.
    pub groups: u64,
    /// The smallest group: the measured k (None for an empty view).
    pub min: Option<u64>,
    /// Groups smaller than the configured k.
    pub groups_below_k: u64,
    /// Rows in those groups.
    pub rows_below_k: u64,
    /// Groups per size band (`1`, `2–4`, ...), smallest band first.
    pub histogram: Vec<(String, u64)>,
}
