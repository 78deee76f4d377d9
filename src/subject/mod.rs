//! Data-subject rights behind `pgveil subject ...`: export, consent
//! (opt-out / opt-in), correction with a second reviewer, erasure and
//! retention. Every function works on the base tables through an admin
//! connection, follows the policy's `[subject]`, `[consent]`, purposes and
//! per-table `erase` / `retention` rules, and returns an [`ActionRecord`]
//! for the privacy log.
//!
//! [`run`] carries out one [`Request`] of the command line and
//! [`SubjectLog`] writes its records into the privacy log.
//!
//! pgveil's own tables for this live in the private schema (created on first
//! use, readable by no view-set role): `subject_key` (the key of customer
//! references), `corrections` (the review queue), `destruction_log` (outlives
//! the data it records) and `anonymized_subjects` (keys of anonymized rows,
//! so retention does not erase them twice).

mod consent;
mod correct;
mod erase;
mod export;
mod log;
mod private;
mod request;
mod retention;
mod schema;

use serde::Serialize;
use tokio_postgres::Client;

use crate::policy::Policy;
use crate::views::ViewsError;

pub use consent::{opt_in, opt_out};
pub use correct::{approve, correct, reject, review_list, Assignment, Correction};
pub use erase::{erase, ErasureReport, TableErasure};
pub use export::export;
pub use log::SubjectLog;
pub use request::{run, Done, Request};
pub use retention::{retention_run, RetentionCount, RetentionReport};

/// Errors of the data-subject layer.
#[derive(Debug, thiserror::Error)]
pub enum SubjectError {
    /// The database refused a query.
    #[error("database error: {}", crate::views::db_message(.0))]
    Db(#[from] tokio_postgres::Error),
    /// The catalog could not be read.
    #[error(transparent)]
    Views(#[from] ViewsError),
    /// The policy has no `[subject]` section.
    #[error("the policy names no data subjects: add [subject] with table and key")]
    NoSubject,
    /// No data subject has this key.
    #[error("no data subject with key {0}")]
    UnknownSubject(String),
    /// The purpose is neither built in nor defined by the policy.
    #[error("unknown purpose \"{purpose}\"; known purposes: {known}")]
    UnknownPurpose {
        /// The purpose asked for.
        purpose: String,
        /// The purposes the policy knows, comma-separated.
        known: String,
    },
    /// A correction names a column that cannot be corrected.
    #[error("{table}.{column}: {reason}")]
    Column {
        /// The table.
        table: String,
        /// The column.
        column: String,
        /// Why it cannot be corrected.
        reason: String,
    },
    /// No correction has this id.
    #[error("no correction with id {0}")]
    NoCorrection(i64),
    /// The correction was already reviewed.
    #[error("correction {id} is already {status}")]
    NotPending {
        /// The correction.
        id: i64,
        /// Its status.
        status: String,
    },
    /// The reviewer is the person who asked for the correction.
    #[error("correction {0}: the reviewer must be someone other than the requester")]
    SameReviewer(i64),
    /// The value changed since the correction was filed.
    #[error("correction {0} is stale: the value changed since it was requested; reject it and file a new one")]
    Stale(i64),
    /// The policy's erase or retention rules cannot be carried out.
    #[error("{0}")]
    Rule(String),
}

impl SubjectError {
    /// The reason the privacy log records for a failed request: the
    /// message without values the requester typed (subject keys, new
    /// values of corrections).
    pub fn log_reason(&self) -> String {
        match self {
            SubjectError::Db(e) => match e.code() {
                Some(code) => format!("database error {}", code.code()),
                None => "database error".into(),
            },
            SubjectError::Views(_) => "the catalog could not be read".into(),
            SubjectError::UnknownSubject(_) => "no data subject with this key".into(),
            SubjectError::Column { table, column, .. } => {
                format!("{table}.{column} cannot be corrected")
            }
            other => other.to_string(),
        }
    }
}

/// What was done, for the privacy log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// All data about a subject was exported.
    Export,
    /// Consent for a purpose was withdrawn.
    OptOut,
    /// Consent for a purpose was given.
    OptIn,
    /// Corrections were filed for review.
    Correct,
    /// A correction was approved and applied.
    Approve,
    /// A correction was rejected.
    Reject,
    /// The pending corrections were listed for review.
    ReviewList,
    /// A subject's data was erased on request.
    Erase,
    /// Expired data was erased by the retention rules.
    Retention,
}

/// One data-subject action, as the privacy log records it. It never holds
/// personal data: the subject is named by its keyed reference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActionRecord {
    /// What was done.
    pub action: Action,
    /// Keyed hash of the subject key (see [`customer_ref`]); `None` for
    /// actions not about one subject.
    pub customer_ref: Option<String>,
    /// The purpose (consent actions).
    pub purpose: Option<String>,
    /// `table.column` names concerned (corrections) or tables (erasure).
    pub columns: Vec<String>,
    /// Who did it.
    pub actor: String,
    /// What happened, in a few words.
    pub outcome: String,
}

/// A result together with its record for the privacy log.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome<T> {
    /// The result.
    pub value: T,
    /// The record for the privacy log.
    pub record: ActionRecord,
}

/// The keyed reference of a subject key: HMAC-SHA-256 of the key under a
/// random key kept in the private schema, hex. Privacy-log entries and
/// destruction records name subjects only by it.
pub async fn customer_ref(
    client: &Client,
    policy: &Policy,
    customer_id: &str,
) -> Result<String, SubjectError> {
    private::ensure(client, policy).await?;
    private::customer_ref(client, policy, customer_id).await
}
