//! Constructors for the refusals the rewriter hands back.

use super::Refusal;

/// SQLSTATE 42501: insufficient privilege.
pub const INSUFFICIENT_PRIVILEGE: &str = "42501";
/// SQLSTATE 0A000: feature not supported.
pub const NOT_SUPPORTED: &str = "0A000";

impl Refusal {
    /// A statement that is understood and not allowed (SQLSTATE 42501).
    pub fn denied(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self {
            sqlstate: INSUFFICIENT_PRIVILEGE,
            message: format!("pgveil: {}", message.into()),
            hint: Some(hint.into()),
        }
    }

    /// A statement pgveil could not fully analyse (SQLSTATE 0A000).
    pub fn unanalysable(detail: impl Into<String>) -> Self {
        Self {
            sqlstate: NOT_SUPPORTED,
            message: format!("pgveil could not analyse the statement: {}", detail.into()),
            hint: Some(
                "Rewrite it in plain SQL (SELECT/INSERT/UPDATE/DELETE on the tables by name), \
                 or report it to the pgveil administrators if it should be supported."
                    .to_owned(),
            ),
        }
    }

    /// A write on a read-only or anonymous view set.
    pub fn read_only() -> Self {
        Self::denied(
            "this view set is read-only: INSERT, UPDATE, DELETE, MERGE and COPY FROM are not allowed",
            "Use an account whose view set allows writes.",
        )
    }
}
