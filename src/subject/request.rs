//! One data-subject request as the command line names it, and running it:
//! the result to print and the records for the privacy log.

use serde::Serialize;
use tokio_postgres::Client;

use crate::policy::Policy;

use super::{
    approve, correct, erase, export, opt_in, opt_out, reject, retention_run, review_list, Action,
    ActionRecord, Assignment, Outcome, SubjectError,
};

/// One data-subject request.
#[derive(Debug, Clone)]
pub enum Request {
    /// Every personal datum about a customer, as JSON.
    Export {
        /// Customer key.
        customer: String,
    },
    /// Withdraw consent for a purpose.
    OptOut {
        /// Customer key.
        customer: String,
        /// Purpose name.
        purpose: String,
    },
    /// Give consent for a purpose.
    OptIn {
        /// Customer key.
        customer: String,
        /// Purpose name.
        purpose: String,
    },
    /// File corrections for review.
    Correct {
        /// Customer key.
        customer: String,
        /// `table.column=value` assignments.
        changes: Vec<Assignment>,
    },
    /// Pending corrections.
    ReviewList,
    /// Apply a pending correction.
    Approve {
        /// Correction id.
        id: i64,
    },
    /// Reject a pending correction.
    Reject {
        /// Correction id.
        id: i64,
        /// Why.
        reason: String,
    },
    /// Erase a customer under the policy's erase rules.
    Erase {
        /// Customer key.
        customer: String,
    },
    /// Apply the retention rules.
    Retention {
        /// Only count what would change.
        dry_run: bool,
    },
}

impl Request {
    /// What the privacy log calls this request.
    pub fn action(&self) -> Action {
        match self {
            Request::Export { .. } => Action::Export,
            Request::OptOut { .. } => Action::OptOut,
            Request::OptIn { .. } => Action::OptIn,
            Request::Correct { .. } => Action::Correct,
            Request::ReviewList => Action::ReviewList,
            Request::Approve { .. } => Action::Approve,
            Request::Reject { .. } => Action::Reject,
            Request::Erase { .. } => Action::Erase,
            Request::Retention { .. } => Action::Retention,
        }
    }

    /// The purpose a consent request is about.
    pub fn purpose(&self) -> Option<&str> {
        match self {
            Request::OptOut { purpose, .. } | Request::OptIn { purpose, .. } => Some(purpose),
            _ => None,
        }
    }
}

/// A request carried out.
#[derive(Debug, Clone)]
pub struct Done {
    /// The result as pretty JSON documents, one after the other.
    pub output: String,
    /// The result alone, as one JSON value (what the HTTP API answers).
    pub value: serde_json::Value,
    /// What the privacy log must record.
    pub records: Vec<ActionRecord>,
}

impl Done {
    fn outcome<T: Serialize>(outcome: Outcome<T>) -> Done {
        Done {
            output: format!("{}\n{}", to_json(&outcome.value), to_json(&outcome.record)),
            value: to_value(&outcome.value),
            records: vec![outcome.record],
        }
    }

    fn record(record: ActionRecord) -> Done {
        Done {
            output: to_json(&record),
            value: to_value(&record),
            records: vec![record],
        }
    }
}

fn to_value<T: Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or_else(|e| format!("cannot render: {e}").into())
}

fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("\"cannot render: {e}\""))
}

/// Runs `request` as `actor` on the base tables behind `client`.
pub async fn run(
    client: &Client,
    policy: &Policy,
    request: Request,
    actor: &str,
) -> Result<Done, SubjectError> {
    Ok(match request {
        Request::Export { customer } => {
            Done::outcome(export(client, policy, &customer, actor).await?)
        }
        Request::OptOut { customer, purpose } => {
            Done::record(opt_out(client, policy, &customer, &purpose, actor).await?)
        }
        Request::OptIn { customer, purpose } => {
            Done::record(opt_in(client, policy, &customer, &purpose, actor).await?)
        }
        Request::Correct { customer, changes } => {
            Done::outcome(correct(client, policy, &customer, &changes, actor).await?)
        }
        Request::ReviewList => {
            let listed = review_list(client, policy, actor).await?;
            Done {
                output: to_json(&listed.value),
                value: to_value(&listed.value),
                records: vec![listed.record],
            }
        }
        Request::Approve { id } => Done::outcome(approve(client, policy, id, actor).await?),
        Request::Reject { id, reason } => {
            Done::outcome(reject(client, policy, id, actor, &reason).await?)
        }
        Request::Erase { customer } => {
            Done::outcome(erase(client, policy, &customer, actor).await?)
        }
        Request::Retention { dry_run } => {
            let report = retention_run(client, policy, dry_run, actor).await?;
            Done {
                output: to_json(&report),
                value: to_value(&report),
                records: report.records.clone(),
            }
        }
    })
}
