//! Errors of the audit layer.

use std::path::PathBuf;

/// Why the audit log could not be started, written, flushed or verified.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// A file of the audit log could not be read or written.
    #[error("audit log {}: {source}", path.display())]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The PostgreSQL audit table could not be created, read or written.
    #[error("audit table pgveil_audit.log: {0}")]
    Table(String),
    /// The `[audit]` configuration cannot work.
    #[error("audit configuration: {0}")]
    Config(String),
    /// The background writer has stopped.
    #[error("the audit writer has stopped")]
    Stopped,
}

impl AuditError {
    /// An I/O error on `path`.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        AuditError::Io {
            path: path.into(),
            source,
        }
    }
}

/// Why the log cannot take an event now: [`crate::audit::AuditHandle::admit`]
/// refuses a statement for it with `required = true`, and
/// [`crate::audit::AuditHandle::record`] reports an event it dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuditUnavailable {
    /// The buffer between the data path and the writer is full.
    #[error("the audit log is not keeping up (buffer full)")]
    Full,
    /// The last write to a sink failed and no write has succeeded since.
    #[error("the audit log cannot be written")]
    Failing,
    /// The writer has stopped.
    #[error("the audit log has stopped")]
    Stopped,
}

impl AuditUnavailable {
    /// SQLSTATE for the error sent to the client: `53000` (insufficient
    /// resources), a transient condition the client may retry.
    pub fn sqlstate(&self) -> &'static str {
        "53000"
    }
}
